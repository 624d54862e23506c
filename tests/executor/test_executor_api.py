"""The executor's HTTP API: create (idempotent), get, list, cancel, errors, token, OpenAPI.

Most tests call the app in-process (httpx ASGITransport) with the service started by hand — which
is exactly how the embedded mode runs it, since a mounted app's lifespan never runs. The
standalone factory is served over real HTTP with its own lifespan.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contract.tasks import TaskCreate, TaskStatus
from app.executor.app import ExecutorService, create_executor_app, create_standalone_executor_app
from app.executor.engine.base import Engine, StageFailed
from app.settings import Settings
from app.store.db import create_engine, session_factory
from tests.executor.test_runner import PARAMS, BlockingEngine, FailingEngine, ProgressEngine
from tests.servers import serve_app
from tests.waiting import wait_for

TOKEN = "executor-s3cret"


@asynccontextmanager
async def running_executor(
    sessions: async_sessionmaker[AsyncSession], engine: Engine, root: Path,
    token: str | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """The executor app in-process, its service started and stopped around the block."""
    service = ExecutorService(sessions, engine, landing_dir=root / "landing",
                              warehouse_dir=root / "warehouse", token=token,
                              sweep_interval=60.0, flush_interval=0.02)
    app = create_executor_app(service)
    await service.start()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://executor", headers=headers) as client:
            yield client
    finally:
        await service.stop(grace=0)


@pytest.fixture
async def executor(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_executor(sessions, ProgressEngine(), tmp_path) as client:
        yield client


@pytest.fixture
async def offline_executor(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app over a service never started and a database never queried: for requests that
    are answered before any query (validation, health, OpenAPI)."""
    db = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    service = ExecutorService(session_factory(db), ProgressEngine(), landing_dir=tmp_path,
                              warehouse_dir=tmp_path)
    transport = httpx.ASGITransport(app=create_executor_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://executor") as client:
        yield client
    await db.dispose()
    assert not (tmp_path / "unused.db").exists()


def body(job_id: str = "job-1", stage: str = "LandingToODS", attempt: int = 1,
         key: str | None = None, **changes: Any) -> dict[str, Any]:
    return {"job_id": job_id, "stage": stage, "attempt": attempt,
            "idempotency_key": key or f"{job_id}:{stage}:{attempt}", "params": PARAMS, **changes}


async def finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        task: dict[str, Any] = (await client.get(f"/v1/tasks/{task_id}")).json()
        return task if task["status"] in ("completed", "failed", "cancelled") else None

    return await wait_for(done, message=f"task {task_id} to finish")


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status and problem["title"]
    return problem


# --- create, get, list -------------------------------------------------------------------------


async def test_a_created_task_runs_to_completed_with_progress_and_cancel_then_changes_nothing(
    executor: httpx.AsyncClient,
) -> None:
    created = await executor.post("/v1/tasks", json=body())

    assert created.status_code == 201
    task = created.json()
    assert created.headers["location"] == f"/v1/tasks/{task['task_id']}"
    assert task["status"] in ("created", "processing")
    assert (task["job_id"], task["stage"], task["attempt"]) == ("job-1", "LandingToODS", 1)
    done = await finished(executor, task["task_id"])
    assert done["status"] == "completed" and done["error"] is None
    assert (done["progress"], done["processed"], done["total"]) == (100.0, 100, 100)
    assert done["result"]["rows"] == 100 and done["result"]["layer"] == "ods"
    assert done["created_at"].endswith("Z") or done["created_at"].endswith("+00:00")
    cancelled_late = await executor.delete(f"/v1/tasks/{task['task_id']}")
    assert cancelled_late.status_code == 200 and cancelled_late.json() == done


async def test_a_task_created_while_a_worker_is_free_is_taken_by_its_insert(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    engine = BlockingEngine()
    service = ExecutorService(sessions, engine, landing_dir=tmp_path / "landing",
                              warehouse_dir=tmp_path / "warehouse", workers=1,
                              sweep_interval=60.0)
    await service.start()
    try:
        first, _ = await service.submit(TaskCreate.model_validate(body("a")))
        second, _ = await service.submit(TaskCreate.model_validate(body("b")))
        stored = await service.store.get(first.task_id)

        assert first.status is TaskStatus.PROCESSING, "the free worker took it in the insert"
        assert stored is not None and stored.runner == service.runner.runner_id
        assert stored.lease_expires_at is not None and stored.started_at is not None
        assert second.status is TaskStatus.CREATED, "no worker free: it waits to be claimed"
        engine.release()
        for task in (first, second):
            async def done(task_id: str = task.task_id) -> bool:
                row = await service.store.get(task_id)
                return row is not None and row.status == TaskStatus.COMPLETED

            await wait_for(done, 10, message=f"task {task.task_id} to complete")
    finally:
        await service.stop(grace=0)


async def test_the_same_idempotency_key_returns_the_same_task(
    executor: httpx.AsyncClient,
) -> None:
    first = await executor.post("/v1/tasks", json=body())
    again = await executor.post("/v1/tasks", json=body())

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["task_id"] == first.json()["task_id"]
    listed = (await executor.get("/v1/tasks", params={"job_id": "job-1"})).json()["tasks"]
    assert [t["task_id"] for t in listed] == [first.json()["task_id"]]


async def test_concurrent_creates_with_one_key_make_one_task(
    executor: httpx.AsyncClient,
) -> None:
    answers = await asyncio.gather(*(executor.post("/v1/tasks", json=body()) for _ in range(8)))

    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["task_id"] for a in answers}) == 1
    listed = (await executor.get("/v1/tasks", params={"job_id": "job-1"})).json()["tasks"]
    assert len(listed) == 1


async def test_reusing_a_key_for_another_job_stage_or_attempt_is_a_conflict(
    executor: httpx.AsyncClient,
) -> None:
    await executor.post("/v1/tasks", json=body(key="the-key"))

    for change in ({"job_id": "job-2"}, {"attempt": 2}, {"stage": "ODSToDWD"}):
        reused = await executor.post("/v1/tasks", json={**body(key="the-key"), **change})
        assert "the-key" in assert_problem(reused, 409)["detail"], change


async def test_tasks_are_read_by_ids_and_exactly_one_filter_is_given(
    executor: httpx.AsyncClient,
) -> None:
    ids = [(await executor.post("/v1/tasks", json=body(f"job-{i}"))).json()["task_id"]
           for i in range(2)]

    found = (await executor.get("/v1/tasks", params={"ids": [*ids, "no-such-task"]})).json()
    assert sorted(t["task_id"] for t in found["tasks"]) == sorted(ids)
    neither = assert_problem(await executor.get("/v1/tasks"), 422)
    assert neither["errors"][0]["field"] == "query.job_id"
    both = assert_problem(await executor.get("/v1/tasks", params={"ids": ids, "job_id": "j"}),
                          422)
    assert both["errors"][0]["field"] == "query.ids"
    too_many = await executor.get("/v1/tasks", params={"ids": [str(i) for i in range(101)]})
    assert "ids" in str(assert_problem(too_many, 422)["errors"])


async def test_an_unknown_task_is_404(executor: httpx.AsyncClient) -> None:
    problem = assert_problem(await executor.get("/v1/tasks/nope"), 404)
    assert "nope" in problem["detail"]
    assert_problem(await executor.delete("/v1/tasks/nope"), 404)


async def test_a_jobs_tasks_are_listed_oldest_first(executor: httpx.AsyncClient) -> None:
    ids = []
    for attempt in (1, 2, 3):
        ids.append((await executor.post("/v1/tasks", json=body(attempt=attempt))).json()["task_id"])
    await executor.post("/v1/tasks", json=body(job_id="job-2"))

    listed = (await executor.get("/v1/tasks", params={"job_id": "job-1"})).json()["tasks"]

    assert [t["task_id"] for t in listed] == ids
    assert [t["attempt"] for t in listed] == [1, 2, 3]
    assert (await executor.get("/v1/tasks", params={"job_id": "job-9"})).json() == {"tasks": []}
    assert_problem(await executor.get("/v1/tasks"), 422)


# --- cancel and failure ------------------------------------------------------------------------


async def test_cancelling_a_running_task_stops_it_quickly_and_it_stays_cancelled(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    engine = BlockingEngine()
    async with running_executor(sessions, engine, tmp_path) as client:
        task_id = (await client.post("/v1/tasks", json=body())).json()["task_id"]
        await wait_for(lambda: engine.started == 1)
        running = (await client.get(f"/v1/tasks/{task_id}")).json()
        assert (running["status"], running["progress"], running["processed"]) == (
            "processing", 10.0, 10)

        loop = asyncio.get_running_loop()
        began = loop.time()
        cancelled = await client.delete(f"/v1/tasks/{task_id}")

        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        await wait_for(lambda: engine.cancelled == 1, timeout=2.0)
        assert loop.time() - began < 2.0
        health = (await client.get("/healthz")).json()
        await wait_for(lambda: engine.returned == 1)
        assert health["status"] == "ok"
        assert (await client.get(f"/v1/tasks/{task_id}")).json()["status"] == "cancelled"


async def test_a_failing_engine_fails_the_task_with_its_message(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    engine = FailingEngine(StageFailed("dwd: check positive_qty is not a boolean"))
    async with running_executor(sessions, engine, tmp_path) as client:
        task_id = (await client.post("/v1/tasks", json=body())).json()["task_id"]
        done = await finished(client, task_id)

    assert done["status"] == "failed" and done["result"] is None
    assert done["error"] == "dwd: check positive_qty is not a boolean"


# --- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"attempt": 0}, "body.attempt"),
        ({"stage": "Nope"}, "body.stage"),
        ({"idempotency_key": ""}, "body.idempotency_key"),
        ({"idempotency_key": "k" * 201}, "body.idempotency_key"),
        ({"job_id": ""}, "body.job_id"),
        ({"params": {"source": {"path": "../secrets.csv"}}}, "body.params.source.path"),
        ({"params": {}}, "body.params.source"),
        ({"surprise": 1}, "body.surprise"),
    ],
)
async def test_a_body_that_breaks_the_schema_is_422_naming_the_field(
    offline_executor: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    response = await offline_executor.post("/v1/tasks", json={**body(), **change})

    problem = assert_problem(response, 422)
    assert field in [e["field"] for e in problem["errors"]]


async def test_malformed_json_is_400(offline_executor: httpx.AsyncClient) -> None:
    response = await offline_executor.post("/v1/tasks", content=b'{"job_id": ',
                                   headers={"content-type": "application/json"})

    assert "JSON" in assert_problem(response, 400)["detail"]


# --- token, health, OpenAPI --------------------------------------------------------------------


async def test_a_configured_token_is_required_on_the_task_routes(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    async with running_executor(sessions, ProgressEngine(), tmp_path, token=TOKEN) as client:
        created = await client.post("/v1/tasks", json=body())
        assert created.status_code == 201
        task_id = created.json()["task_id"]

        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Basic {TOKEN}"}):
            refused = await client.get(f"/v1/tasks/{task_id}", headers=headers)
            assert_problem(refused, 401)
            assert refused.headers["www-authenticate"] == "Bearer"
        no_header = httpx.AsyncClient(transport=client._transport, base_url="http://executor")
        async with no_header:
            assert_problem(await no_header.post("/v1/tasks", json=body()), 401)
            assert_problem(await no_header.get("/v1/tasks", params={"job_id": "job-1"}), 401)
            assert_problem(await no_header.delete(f"/v1/tasks/{task_id}"), 401)
            assert (await no_header.get("/healthz")).status_code == 200
        assert (await client.get(f"/v1/tasks/{task_id}")).status_code == 200


async def test_healthz_reports_the_runner(offline_executor: httpx.AsyncClient) -> None:
    health = (await offline_executor.get("/healthz")).json()

    assert health["status"] == "ok" and health["runner_id"]
    assert (health["running"], health["queue_depth"]) == (0, 0)


async def test_the_executor_has_its_own_openapi_with_stable_operation_ids(
    offline_executor: httpx.AsyncClient,
) -> None:
    spec = (await offline_executor.get("/openapi.json")).json()

    assert spec["info"]["title"] == "Strata executor"
    operations = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert operations == {"create_task", "list_tasks", "get_task", "cancel_task", "healthz"}


async def test_the_standalone_app_runs_the_executor_from_its_own_lifespan(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, database_url=database_url,
                        landing_dir=tmp_path / "landing", warehouse_dir=tmp_path / "warehouse",
                        executor_token=TOKEN)
    app = create_standalone_executor_app(settings, engine=ProgressEngine())

    async with serve_app(app) as base_url, httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        created = await client.post("/v1/tasks", json=body())
        assert created.status_code == 201
        done = await finished(client, created.json()["task_id"])
        assert done["status"] == "completed"
    assert (tmp_path / "warehouse").is_dir()


# --- the real engine ---------------------------------------------------------------------------


@pytest.fixture
def landed_orders(landing_dir: Path) -> Path:
    folder = landing_dir / "orders"
    folder.mkdir()
    (folder / "2024-05-01.csv").write_text("order_id,qty\n1,2\n2,3\n3,-1\n")
    return folder


async def test_a_tiny_csv_lands_in_ods_through_the_executor_with_the_duckdb_engine(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, landed_orders: Path,
    warehouse_dir: Path,
) -> None:
    from app.executor.engine.duckdb_engine import DuckDBEngine

    async with running_executor(sessions, DuckDBEngine(), tmp_path) as client:
        created = await client.post("/v1/tasks", json=body(job_id="job-duck"))
        done = await finished(client, created.json()["task_id"])

    assert done["status"] == "completed", done["error"]
    assert done["result"]["rows"] == 3 and done["result"]["layer"] == "ods"
    assert (done["progress"], done["processed"]) == (100.0, 3)
    assert parquet_files(Path(done["result"]["path"])) == parquet_files(
        warehouse_dir / "job-duck" / "ods") != []


def parquet_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.resolve().glob("*.parquet"))
