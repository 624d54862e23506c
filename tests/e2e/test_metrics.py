"""/metrics speaks Prometheus text and counts what the service did."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.jobs_over_http import submit, wait_status


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


async def test_metrics_parse_and_count_jobs_transitions_stages_and_rows(
    service: httpx.AsyncClient,
) -> None:
    await service.put("/v1/landing/in/n.csv", content=b"n\n1\n2\n3\n")
    job_id = await submit(service, {"name": "m", "params": {"source": {"path": "in/*.csv"}}})
    assert (await wait_status(service, job_id))["status"] == "Succeeded"
    response = await service.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain")
    got = samples(response.text)
    assert all(name.startswith("strata_") for name, _ in got if not name.startswith(
        ("python_", "process_")))
    assert got[("strata_jobs", (("status", "Succeeded"),))] == 1
    assert got[("strata_jobs", (("status", "Failed"),))] == 0
    done = (("event", "stage_done"), ("from_status", "LandingToODS"), ("to_status", "ODSToDWD"))
    assert got[("strata_job_transitions_total", done)] == 1
    assert got[("strata_stage_duration_seconds_count", (("stage", "DWSToDS"),))] == 1
    assert got[("strata_tasks_created_total", (("stage", "LandingToODS"),))] == 1
    assert got[("strata_executor_rows_processed_total", (("layer", "ods"),))] == 3
    assert got[("strata_watcher_tick_duration_seconds_count", ())] >= 1
    assert ("strata_executor_queue_depth", ()) in got
