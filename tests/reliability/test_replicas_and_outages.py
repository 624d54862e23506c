"""Several replicas, a dead executor, dropped database connections: jobs still finish, once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from tests.databases import PG_ADMIN_DSN
from tests.jobs_over_http import submit, wait_status
from tests.processes import StrataProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

HAPPY = ["create", "start", "stage_done", "stage_done", "stage_done", "stage_done", "succeed"]


def tiny_job(i: int, **params: Any) -> dict[str, Any]:
    return {"name": f"tiny-{i}", "params": {
        "source": {"path": "in/*.csv", "format": "csv", "options": {"header": True}},
        "layers": {"dws": {"sql": "SELECT kind, count(*) AS n FROM dwd GROUP BY ALL"}},
        "retries": 0, **params}}


async def land(api: httpx.AsyncClient) -> None:
    body = "n,kind\n" + "".join(f"{i},{'even' if i % 2 == 0 else 'odd'}\n" for i in range(100))
    assert (await api.put("/v1/landing/in/n.csv", content=body.encode())).status_code in (200, 201)


async def history(api: httpx.AsyncClient, job_id: str) -> tuple[list[str], list[dict[str, Any]]]:
    events = (await api.get(f"/v1/jobs/{job_id}/events")).json()["events"]
    tasks = (await api.get("/executor/v1/tasks", params={"job_id": job_id})).json()["tasks"]
    return [e["event"] for e in events], tasks


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_replicas_on_one_postgres_never_advance_a_job_twice(
    database_url: str, make_process: Callable[..., StrataProcess],
) -> None:
    replicas = [make_process("serve", database_url, STRATA_MAX_WORKERS=2) for _ in range(2)]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        await replica.ready()
    clients = [httpx.AsyncClient(base_url=r.url, timeout=30) for r in replicas]
    try:
        await land(clients[0])
        ids = await asyncio.gather(*(submit(clients[i % 2], tiny_job(i)) for i in range(24)))
        for i, job_id in enumerate(ids):
            job = await wait_status(clients[(i + 1) % 2], job_id, within=120)
            assert job["status"] == "Succeeded", job["conditions"]
        for job_id in ids:
            events, tasks = await history(clients[0], job_id)
            assert events == HAPPY, job_id
            assert Counter(t["stage"] for t in tasks) == Counter(
                {"LandingToODS": 1, "ODSToDWD": 1, "DWDToDWS": 1, "DWSToDS": 1})
            assert {t["status"] for t in tasks} == {"completed"}
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_jobs_wait_while_the_executor_is_down_and_finish_when_it_is_back(
    database_url: str, make_process: Callable[..., StrataProcess],
) -> None:
    executor = make_process("executor", database_url)
    service = make_process("serve", database_url)
    service.env["STRATA_EXECUTOR_URL"] = executor.url
    executor.start()
    service.start()
    await executor.ready()
    await service.ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        await land(api)
        executor.kill()
        job_id = await submit(api, tiny_job(0, timeout_seconds=120))

        async def waiting_for_executor() -> bool:
            job = (await api.get(f"/v1/jobs/{job_id}")).json()
            return any(c["type"] == "ExecutorReachable" and c["status"] == "False"
                       for c in job["conditions"])

        await wait_for(waiting_for_executor, timeout=30, interval=0.1,
                       message="condition ExecutorReachable=False")
        assert (await api.get(f"/v1/jobs/{job_id}")).json()["status"] == "LandingToODS"
        assert (await api.get("/readyz")).status_code == 503
        executor.start()
        job = await wait_status(api, job_id, within=60)
        assert job["status"] == "Succeeded", job["conditions"]
        reachable = next(c for c in job["conditions"] if c["type"] == "ExecutorReachable")
        assert reachable["status"] == "True"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_service_recovers_when_postgres_drops_its_connections(
    database_url: str, make_process: Callable[..., StrataProcess],
) -> None:
    service = make_process("serve", database_url)
    service.start()
    await service.ready()
    database = database_url.rsplit("/", 1)[1]
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
        await land(api)
        first = await submit(api, tiny_job(0))
        assert (await wait_status(api, first))["status"] == "Succeeded"
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            dropped = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
        finally:
            await admin.close()
        assert dropped >= 1
        # reads skip the pre-ping: a dead pooled connection is retried once on a fresh one
        for _ in range(3):
            assert (await api.get(f"/v1/jobs/{first}")).status_code == 200
        second = await submit(api, tiny_job(1))
        assert (await wait_status(api, second, within=60))["status"] == "Succeeded"
        assert (await api.get("/readyz")).status_code == 200
