"""The BatchManager client: the real executor over real HTTP; faults through MockTransport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.batch.client import (
    BatchClient,
    ExecutorUnavailable,
    TaskNotFound,
    TaskRejected,
    UnexpectedResponse,
    make_http_client,
)
from app.contract.tasks import TaskCreate, TaskPublic, TaskStatus
from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.app import ExecutorService, create_executor_app
from tests.executor.test_runner import PARAMS, ProgressEngine
from tests.servers import free_port, serve_app
from tests.waiting import wait_for

TOKEN = "executor-s3cret"
TASK_JSON: dict[str, Any] = {
    "task_id": "t-1", "job_id": "job-1", "stage": "LandingToODS", "attempt": 1,
    "status": "processing", "progress": 12.5, "processed": 125, "total": 1000, "result": None,
    "error": None, "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:01Z",
}


def task(attempt: int = 1, key: str = "job-1:LandingToODS:1") -> TaskCreate:
    """The create body of the job's first stage; an invalid `attempt` is sent unchecked."""
    fields = {"job_id": "job-1", "stage": Stage.LANDING_TO_ODS, "attempt": attempt,
              "idempotency_key": key, "params": JobParams.model_validate(PARAMS),
              "landing_scope": None}
    return TaskCreate.model_construct(**fields) if attempt < 1 else TaskCreate(**fields)


PROBLEM = {"type": "about:blank", "title": "Conflict", "status": 409,
           "detail": "idempotency_key 'k' belongs to task t-0"}


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], *, token: str | None = None,
    attempts: int = 3,
) -> tuple[BatchClient, list[httpx.Request]]:
    """A client whose every request goes to `handler`; the list records what was sent."""
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(recording),
                             base_url="http://executor.test/executor")
    return BatchClient(http, token=token, retry_attempts=attempts, retry_wait=0.001), seen


@pytest.fixture
async def closing() -> AsyncIterator[list[BatchClient]]:
    """Clients put here get their httpx client closed after the test."""
    clients: list[BatchClient] = []
    yield clients
    for client in clients:
        await client.http.aclose()


# --- against the real executor, mounted as in the embedded default -----------------------------


@asynccontextmanager
async def embedded_executor(
    sessions: async_sessionmaker[AsyncSession], root: Path
) -> AsyncIterator[str]:
    """A parent app that mounts the executor under /executor and starts it from its lifespan,
    served over real HTTP; yields the executor's base URL."""
    service = ExecutorService(sessions, ProgressEngine(), landing_dir=root / "landing",
                              warehouse_dir=root / "warehouse", token=TOKEN,
                              sweep_interval=60.0, flush_interval=0.02)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop(grace=1)

    parent = FastAPI(lifespan=lifespan)
    parent.mount("/executor", create_executor_app(service))
    async with serve_app(parent) as base_url:
        yield f"{base_url}/executor"


async def test_the_client_drives_a_task_through_the_real_executor_over_http(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    async with embedded_executor(sessions, tmp_path) as url, make_http_client(url) as http:
        batch = BatchClient(http, token=TOKEN)
        assert await batch.healthy()

        created = await batch.create_task(task())
        again = await batch.create_task(task())
        assert again.task_id == created.task_id and created.job_id == "job-1"

        async def succeeded() -> TaskPublic | None:
            polled = await batch.get_task_status(created.task_id)
            return polled if polled.finished else None

        done = await wait_for(succeeded)
        assert done.succeeded and done.status is TaskStatus.COMPLETED
        assert done.result is not None and done.result["rows"] == 100
        assert [t.task_id for t in await batch.list_tasks("job-1")] == [created.task_id]
        cancelled_late = await batch.cancel_task(created.task_id)
        assert cancelled_late is not None and cancelled_late.succeeded  # finished: unchanged

        assert await batch.cancel_task("no-such-task") is None
        with pytest.raises(TaskNotFound):
            await batch.get_task_status("no-such-task")
        with pytest.raises(TaskRejected) as reused:
            await batch.create_task(task(attempt=2))
        assert reused.value.status == 409 and created.task_id in reused.value.detail
        with pytest.raises(TaskRejected) as invalid:
            await batch.create_task(task(attempt=0, key="k"))
        assert invalid.value.status == 422 and "attempt" in invalid.value.detail
        with pytest.raises(TaskRejected) as unauthorized:
            await BatchClient(http).list_tasks("job-1")
        assert unauthorized.value.status == 401


async def test_many_tasks_are_polled_with_one_request_per_hundred_ids(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    async with embedded_executor(sessions, tmp_path) as url, make_http_client(url) as http:
        requests: list[httpx.Request] = []

        async def record(request: httpx.Request) -> None:
            requests.append(request)

        http.event_hooks["request"].append(record)
        batch = BatchClient(http, token=TOKEN)
        created = [await batch.create_task(task(key=f"job-1:LandingToODS:{i}")) for i in range(3)]
        requests.clear()
        ids = [t.task_id for t in created]

        found = await batch.get_tasks([*ids, "no-such-task", ids[0]])
        assert sorted(t.task_id for t in found) == sorted(ids), "unknown ids are left out"
        assert len(requests) == 1
        requests.clear()
        await batch.get_tasks([*ids, *(f"unknown-{i}" for i in range(150))])
        assert len(requests) == 2, "more than MAX_IDS_PER_POLL ids take another request"


# --- faults, with MockTransport ----------------------------------------------------------------


async def test_5xx_answers_are_retried_until_one_succeeds(closing: list[BatchClient]) -> None:
    answers = iter([httpx.Response(503, json={"detail": "busy"}), httpx.Response(502),
                    httpx.Response(200, json=TASK_JSON)])
    batch, seen = mock_client(lambda request: next(answers))
    closing.append(batch)

    task = await batch.get_task_status("t-1")

    assert len(seen) == 3 and task.task_id == "t-1" and task.progress == 12.5
    assert [r.url.path for r in seen] == ["/executor/v1/tasks/t-1"] * 3


async def test_5xx_on_every_attempt_is_executor_unavailable(closing: list[BatchClient]) -> None:
    batch, seen = mock_client(lambda request: httpx.Response(503, json={"detail": "draining"}),
                              attempts=4)
    closing.append(batch)

    with pytest.raises(ExecutorUnavailable, match="503 draining"):
        await batch.create_task(task(key="k"))
    assert len(seen) == 4


@pytest.mark.parametrize(
    "error", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError]
)
async def test_connection_errors_and_timeouts_are_retried_then_executor_unavailable(
    closing: list[BatchClient], error: type[httpx.TransportError]
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("no route", request=request)

    batch, seen = mock_client(fail, attempts=3)
    closing.append(batch)

    with pytest.raises(ExecutorUnavailable, match=error.__name__) as raised:
        await batch.get_task_status("t-1")
    assert len(seen) == 3 and isinstance(raised.value.__cause__, error)
    assert await batch.healthy() is False


async def test_a_connection_error_against_a_closed_port_is_executor_unavailable() -> None:
    nobody_listens = free_port()
    async with make_http_client(f"http://127.0.0.1:{nobody_listens}/executor", timeout=2.0) as http:
        batch = BatchClient(http, retry_attempts=2, retry_wait=0.001)
        with pytest.raises(ExecutorUnavailable, match="2 attempt"):
            await batch.list_tasks("job-1")
        assert await batch.healthy() is False


async def test_404_is_task_not_found_and_not_retried(closing: list[BatchClient]) -> None:
    batch, seen = mock_client(lambda request: httpx.Response(404, json={"detail": "nope"}))
    closing.append(batch)

    with pytest.raises(TaskNotFound) as raised:
        await batch.get_task_status("t-9")
    assert raised.value.task_id == "t-9" and len(seen) == 1
    assert await batch.cancel_task("t-9") is None


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (409, PROBLEM, PROBLEM["detail"]),
        (422, {"title": "Validation failed", "status": 422,
               "detail": "body.attempt: Input should be greater than or equal to 1"},
         "body.attempt: Input should be greater than or equal to 1"),
        (401, {"title": "Unauthorized", "status": 401}, "Unauthorized"),
    ],
)
async def test_other_4xx_are_task_rejected_with_the_problem_detail(
    closing: list[BatchClient], status: int, body: dict[str, Any], detail: str
) -> None:
    batch, seen = mock_client(lambda request: httpx.Response(status, json=body))
    closing.append(batch)

    with pytest.raises(TaskRejected) as raised:
        await batch.create_task(task(key="k"))

    assert (raised.value.status, raised.value.detail) == (status, detail)
    assert len(seen) == 1


async def test_requests_carry_the_token_and_the_task_body(closing: list[BatchClient]) -> None:
    batch, seen = mock_client(lambda request: httpx.Response(201, json=TASK_JSON), token=TOKEN)
    anonymous, seen_anonymous = mock_client(lambda request: httpx.Response(200, json=TASK_JSON))
    closing.extend([batch, anonymous])

    await batch.create_task(task())
    await anonymous.get_task_status("t-1")

    sent = seen[0]
    assert (sent.method, sent.url.path) == ("POST", "/executor/v1/tasks")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert httpx.Response(200, content=sent.content).json() == {
        "job_id": "job-1", "stage": "LandingToODS", "attempt": 1,
        "idempotency_key": "job-1:LandingToODS:1", "params": PARAMS, "landing_scope": None}
    assert "authorization" not in seen_anonymous[0].headers


async def test_an_answer_that_is_not_a_task_is_unexpected(closing: list[BatchClient]) -> None:
    batch, _ = mock_client(lambda request: httpx.Response(200, text="<html>proxy</html>"))
    closing.append(batch)

    with pytest.raises(UnexpectedResponse):
        await batch.get_task_status("t-1")
    with pytest.raises(ExecutorUnavailable):  # the watcher's "wait and try again" branch
        await batch.list_tasks("job-1")


@pytest.mark.parametrize(
    ("status", "finished", "succeeded"),
    [("created", False, False), ("processing", False, False), ("completed", True, True),
     ("failed", True, False), ("cancelled", True, False)],
)
def test_a_batch_task_knows_whether_it_is_finished(
    status: str, finished: bool, succeeded: bool
) -> None:
    document = TaskPublic.model_validate({**TASK_JSON, "status": status, "extra_field": "ignored"})

    assert (document.finished, document.succeeded) == (finished, succeeded)


async def test_make_http_client_has_bounded_timeouts() -> None:
    async with make_http_client("http://127.0.0.1:8000/executor", timeout=10.0) as http:
        assert http.timeout.connect == 5.0 and http.timeout.read == 10.0
        assert str(http.base_url) == "http://127.0.0.1:8000/executor/"
