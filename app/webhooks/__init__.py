"""Webhook delivery: where a webhook may go, and the dispatcher that empties the outbox."""
