"""kill -9 of the service between "tick decided" and "job created", then a restart: the tick
never has two jobs, and the schedule goes on firing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.processes import StrataProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

PIPELINE = {
    "params": {"source": {"path": "in/*.csv", "options": {"header": True}}},
    "schedule": {"interval_seconds": 1, "concurrency_policy": "Allow", "catchup": True},
}


async def runs(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    body = (await api.get("/v1/jobs", params={"pipeline": "every-second", "limit": 500})).json()
    return list(body["jobs"])


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_kill_between_deciding_a_tick_and_creating_its_job_never_makes_two(
    database_url: str, make_process: Callable[..., StrataProcess],
) -> None:
    service = make_process("serve", database_url, STRATA_SCHEDULER_INTERVAL="0.2")
    service.start(STRATA_CRASH_AT="after_tick_decided")
    await service.ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        await api.put("/v1/landing/in/n.csv", content=b"n\n1\n")
        created = await api.put("/v1/pipelines/every-second", json=PIPELINE)
        assert created.status_code == 201, created.text
    assert await service.exited() == 137, "the failpoint was not reached"

    service.start()
    await service.ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        await wait_for(lambda: runs(api), timeout=30, interval=0.1, message="a scheduled run")
        jobs = await runs(api)
        pipeline = (await api.get("/v1/pipelines/every-second")).json()
    per_tick = Counter(job["pipeline"]["scheduled_for"] for job in jobs)
    assert per_tick and max(per_tick.values()) == 1, per_tick
    created_ticks = {t["scheduled_for"]: t["job_id"] for t in pipeline["last_ticks"]
                     if t["outcome"] == "created"}
    by_tick = {job["pipeline"]["scheduled_for"]: job["job_id"] for job in jobs}
    assert all(by_tick.get(at) == job_id for at, job_id in created_ticks.items()
               if at in by_tick)
