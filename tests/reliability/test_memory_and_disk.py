"""Two memory bombs at once leave the service alive: each stage is held to its share of memory,
fails with reason `OutOfMemory` (once, not retried) and the process keeps answering."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jobs_over_http import events_of, submit, upload, wait_status
from tests.orders_data import EXAMPLES, generate, write_csv
from tests.processes import StrataProcess

pytestmark = pytest.mark.slow

# every order joined with every order and its strings aggregated into one: ~2 GB in one
# aggregate state, which cannot spill, from 3,000 landed rows
MEMORY_BOMB = ("SELECT length(string_agg(b.customer_id || repeat('x', 200), ',')) AS bytes "
               "FROM ods a CROSS JOIN ods b")


def bomb_job(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((EXAMPLES / "orders_job.json").read_text())
    spec["name"] = name
    spec["params"]["layers"] = {"ods": {}, "dwd": {"sql": MEMORY_BOMB}, "dws": {}, "ds": {}}
    spec["params"]["retries"] = 3
    return spec


def peak_rss(pid: int) -> int:
    """The process's high-water resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_two_concurrent_memory_bombs_fail_cleanly_and_the_service_lives(
    database_url: str, make_process: Callable[..., StrataProcess], tmp_path: Path
) -> None:
    service = make_process("serve", database_url, STRATA_EXECUTOR_MEMORY_LIMIT="200MB",
                           STRATA_EXECUTOR_WORKERS="2", STRATA_MAX_WORKERS="4")
    service.start()
    await service.ready()
    orders = write_csv(generate(3000, seed=7), tmp_path / "src", files=1)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        await upload(api, orders)
        jobs = [await submit(api, bomb_job(f"bomb-{n}")) for n in range(2)]
        for job_id in jobs:
            job = await wait_status(api, job_id, within=90)
            assert job["status"] == "Failed", job
            failed = next(c for c in job["conditions"] if c["type"] == "Failed")
            assert failed["reason"] == "OutOfMemory", failed
            assert "Out of Memory" in failed["message"]
            assert "retry_stage" not in [event for event, _, _ in await events_of(api, job_id)]
            assert job["results"]["layers"]["ods"]["rows"] == 3000  # the stage before was fine
        assert (await api.get("/healthz")).status_code == 200
        assert (await api.get("/executor/healthz")).json()["running"] == 0
    assert service.proc is not None and service.proc.poll() is None
    assert peak_rss(service.proc.pid) < 1024**3, "the stages were not held to their share"
    leftovers = list((tmp_path / "warehouse").glob("*/.tmp-*"))
    assert leftovers == []
