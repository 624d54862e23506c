"""The public HTTP API: `/v1/jobs`, landing uploads, the data service, health."""
