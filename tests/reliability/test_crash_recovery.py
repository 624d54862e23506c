"""kill -9 of the service at the worst moments, then a restart: the job still Succeeds with the
right output, and no stage ran to completion twice.

Each crash point is a named failpoint (`STRATA_CRASH_AT`) in the watcher: right after the
executor created a task but before its id was saved; inside a transition's transaction before
the commit; right after a transition's commit. A last case kills the process at an arbitrary
moment while a stage runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jobs_over_http import submit, upload, wait_status
from tests.orders_data import Dirt, generate, write_csv
from tests.outputs import differences
from tests.processes import StrataProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

CRASH_POINTS = [
    "after_task_create",        # task exists in the executor, its id is not saved
    "after_task_create:3",      # … at the third stage
    "before_transition_commit:2",  # stage done in the executor, transition rolled back
    "after_transition_commit:4",   # transition committed, next stage not started
]


@pytest.fixture
def orders(tmp_path: Path) -> list[Path]:
    return write_csv(generate(4000, seed=5, dirt=Dirt().scaled(4)), tmp_path / "src", files=2)


async def run_to_end(proc: StrataProcess, job_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as api:
        return await wait_status(api, job_id, within=90)


async def tasks_of(api: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    body = (await api.get("/executor/v1/tasks", params={"job_id": job_id})).json()
    return list(body["tasks"])


def assert_each_stage_completed_once(tasks: list[dict[str, Any]]) -> None:
    completed = Counter(t["stage"] for t in tasks if t["status"] == "completed")
    assert completed == {"LandingToODS": 1, "ODSToDWD": 1, "DWDToDWS": 1, "DWSToDS": 1}
    keys = Counter((t["stage"], t["attempt"]) for t in tasks)
    assert max(keys.values()) == 1


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_a_crash_at_a_failpoint_loses_and_duplicates_nothing(
    database_url: str, point: str, make_process: Callable[..., StrataProcess],
    orders: list[Path], orders_job: dict[str, Any],
) -> None:
    service = make_process("serve", database_url)
    service.start()
    await service.ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        await upload(api, orders)
        control = await submit(api, orders_job)
        expected = await wait_status(api, control)
        assert expected["status"] == "Succeeded"
        expected_rows = (await api.get(f"/v1/jobs/{control}/output",
                                       params={"limit": 100000})).json()
    service.stop()

    service.start(STRATA_CRASH_AT=point)
    await service.ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        job_id = await submit(api, orders_job)
    assert await service.exited() == 137, "the failpoint was not reached"

    service.start()
    await service.ready()
    job = await run_to_end(service, job_id)
    assert job["status"] == "Succeeded", job["conditions"]
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        rows = (await api.get(f"/v1/jobs/{job_id}/output", params={"limit": 100000})).json()
        assert differences(rows, expected_rows) == []
        assert_each_stage_completed_once(await tasks_of(api, job_id))
        events = [e["event"] for e in (await api.get(f"/v1/jobs/{job_id}/events")).json()[
            "events"]]
        assert events == ["create", "start", "stage_done", "stage_done", "stage_done",
                          "stage_done", "succeed"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_kill_mid_stage_reruns_the_interrupted_stage_from_its_inputs(
    database_url: str, make_process: Callable[..., StrataProcess], tmp_path: Path,
) -> None:
    service = make_process("serve", database_url)
    service.start()
    await service.ready()
    rows = "".join(f"{i},{i % 7}\n" for i in range(3000))
    slow = "SELECT l.*, r.range AS k FROM landing l, range(3000) r"
    spec = {"name": "slow", "params": {
        "source": {"path": "in/*.csv", "format": "csv", "options": {"header": True}},
        "layers": {"ods": {"sql": slow}}, "retries": 0}}
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        await api.put("/v1/landing/in/n.csv", content=("n,m\n" + rows).encode())
        job_id = await submit(api, spec)

        async def processing() -> bool:
            tasks = await tasks_of(api, job_id)
            return bool(tasks) and tasks[0]["status"] == "processing"

        await wait_for(processing, timeout=20, interval=0.02, message="stage running")
    service.kill()
    assert not (tmp_path / "warehouse" / job_id / "ods").exists()

    service.start()
    await service.ready()
    job = await run_to_end(service, job_id)
    assert job["status"] == "Succeeded", job["conditions"]
    assert job["results"]["layers"]["ods"]["rows"] == 3000 * 3000
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        tasks = await tasks_of(api, job_id)
    first = tasks[0]
    assert (first["stage"], first["attempt"], first["status"]) == ("LandingToODS", 1, "completed")
    assert_each_stage_completed_once(tasks)
