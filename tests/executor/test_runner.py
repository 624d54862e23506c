"""The task runner: bounded pool, progress, cancel, failures, leases, recovery and shutdown.

Engines here are small fakes (also used by the API and client tests): one that reports progress
and succeeds, one that blocks until cancelled (or released), one that raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.contract.tasks import TaskCreate, TaskPublic, TaskStatus
from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.engine.base import (
    CancelToken,
    Engine,
    LayerResult,
    Progress,
    ProgressCallback,
    SandboxViolation,
    StageCancelled,
    StageFailed,
    StageRequest,
)
from app.executor.runner import TaskRunner, new_runner_id
from app.executor.schemas import task_public
from app.executor.tasks import TaskStore
from app.store.db import transaction
from app.store.models import ExecutorTask
from app.store.types import utcnow
from tests.waiting import wait_for

# --- fake engines ------------------------------------------------------------------------------


def _result(request: StageRequest, rows: int) -> LayerResult:
    layer = request.stage.layer
    return LayerResult(layer=layer, rows=rows, path=str(request.job_dir / layer), seconds=0.01)


class ProgressEngine:
    """Reports progress in `steps` and succeeds with `rows` rows."""

    name = "fake-progress"

    def __init__(self, steps: int = 4, rows: int = 100) -> None:
        self.steps, self.rows = steps, rows
        self.requests: list[StageRequest] = []
        self.threads: list[str] = []

    def run_stage(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        self.requests.append(request)
        self.threads.append(threading.current_thread().name)
        for step in range(1, self.steps + 1):
            cancel.raise_if_cancelled()
            report(Progress(100.0 * step / self.steps, self.rows * step // self.steps, self.rows))
        return _result(request, self.rows)


class BlockingEngine:
    """Reports 10 % and blocks until its token is cancelled (or `release()` lets it succeed)."""

    name = "fake-blocking"

    def __init__(self, honour_cancel: bool = True) -> None:
        self.honour_cancel = honour_cancel
        self.requests: list[StageRequest] = []
        self.cancelled = 0
        self.returned = 0
        self._released = threading.Event()
        self._lock = threading.Lock()

    @property
    def started(self) -> int:
        return len(self.requests)

    def release(self) -> None:
        self._released.set()

    def run_stage(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        wake = threading.Event()
        self._released_hook(wake)
        unregister = cancel.on_cancel(wake.set) if self.honour_cancel else (lambda: None)
        report(Progress(10.0, 10, 100))
        with self._lock:
            self.requests.append(request)
        try:
            wake.wait(timeout=10)
            if self.honour_cancel and cancel.cancelled:
                with self._lock:
                    self.cancelled += 1
                raise StageCancelled("cancelled")
            return _result(request, 100)
        finally:
            unregister()
            with self._lock:
                self.returned += 1

    def _released_hook(self, wake: threading.Event) -> None:
        def relay() -> None:
            self._released.wait(timeout=10)
            wake.set()

        threading.Thread(target=relay, daemon=True).start()


class FailingEngine:
    """Reports 50 %, then raises `error` (or the error mapped to the request's job id)."""

    name = "fake-failing"

    def __init__(self, error: Exception | dict[str, Exception]) -> None:
        self.error = error

    def run_stage(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        report(Progress(50.0, 5, 10))
        raise self.error[request.job_id] if isinstance(self.error, dict) else self.error


# --- helpers -----------------------------------------------------------------------------------

PARAMS = {"source": {"path": "orders/*.csv", "format": "csv", "options": {"header": True}},
          "concurrency": 3}


def task_body(
    job_id: str = "job-1", stage: Stage = Stage.LANDING_TO_ODS, attempt: int = 1,
    key: str | None = None,
) -> TaskCreate:
    return TaskCreate(job_id=job_id, stage=stage, attempt=attempt,
                      idempotency_key=key or f"{job_id}:{stage.value}:{attempt}",
                      params=JobParams.model_validate(PARAMS))


async def set_row(sessions: async_sessionmaker[AsyncSession], task_id: str, **values: Any) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            update(ExecutorTask).where(col(ExecutorTask.id) == task_id).values(**values)
        )


async def status_of(store: TaskStore, task_id: str) -> str:
    task = await store.get(task_id)
    assert task is not None
    return task.status


RunnerFactory = Callable[..., TaskRunner]


@pytest.fixture
def store(sessions: async_sessionmaker[AsyncSession]) -> TaskStore:
    return TaskStore(sessions)


@pytest.fixture
async def make_runner(
    store: TaskStore, landing_dir: Path, warehouse_dir: Path
) -> AsyncIterator[RunnerFactory]:
    """Build runners with test-fast intervals; every one is stopped at the end of the test."""
    made: list[TaskRunner] = []

    def make(engine: Engine, **overrides: Any) -> TaskRunner:
        options: dict[str, Any] = {
            "landing_dir": landing_dir, "warehouse_dir": warehouse_dir, "workers": 2,
            "lease_seconds": 30.0, "flush_interval": 0.02, "sweep_interval": 60.0, **overrides,
        }
        runner = TaskRunner(store, engine, **options)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        await runner.stop(grace=0, hard_timeout=1)


async def finished(store: TaskStore, task_id: str, timeout: float = 5.0) -> ExecutorTask:
    async def done() -> ExecutorTask | None:
        task = await store.get(task_id)
        return task if task is not None and TaskStatus(task.status).finished else None

    return await wait_for(done, timeout, message=f"task {task_id} to finish")


# --- running -----------------------------------------------------------------------------------


async def test_runs_a_task_to_completed_in_a_worker_thread(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    engine = ProgressEngine(rows=120)
    runner = make_runner(engine, memory_limit="1GB")
    await runner.start()
    task, created = await store.create_or_get(task_body())
    assert created and task.status == "created"

    runner.submit(task.id)
    done = await finished(store, task.id)

    assert done.status == "completed"
    assert (done.progress, done.processed, done.total) == (100.0, 120, 120)
    assert done.result is not None and done.result["rows"] == 120
    assert done.result["layer"] == "ods" and done.error is None
    assert done.runner == runner.runner_id and done.lease_expires_at is None
    assert done.started_at is not None and done.finished_at is not None
    assert engine.threads[0].startswith("strata-stage")
    request = engine.requests[0]
    assert request.job_id == "job-1" and request.stage is Stage.LANDING_TO_ODS
    assert request.threads == 3 and request.memory_limit == "1GB"
    assert request.landing_dir == runner.landing_dir and runner.landing_dir.is_absolute()
    assert request.warehouse_dir == runner.warehouse_dir and runner.warehouse_dir.is_absolute()
    assert (request.landing_dir.name, request.warehouse_dir.name) == ("landing", "warehouse")
    again = await runner.cancel(task.id)  # cancelling a finished task changes nothing
    assert again is not None and again.status == "completed"
    assert await runner.cancel("no-such-task") is None


async def test_the_finished_task_is_handed_to_on_finished_as_it_was_written(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    runner = make_runner(ProgressEngine(rows=30))
    handed: list[TaskPublic] = []
    runner.on_finished = handed.append
    await runner.start()
    task, _ = await store.create_or_get(task_body())

    runner.submit(task.id)
    done = await finished(store, task.id)
    await wait_for(lambda: bool(handed), 5, message="the hand-over")

    assert handed == [task_public(done)]
    assert handed[0].status is TaskStatus.COMPLETED and handed[0].result == done.result


async def test_a_running_task_shows_progress_and_a_cancel_stops_it_within_seconds(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    engine = BlockingEngine()
    runner = make_runner(engine)
    await runner.start()
    task, _ = await store.create_or_get(task_body())
    runner.submit(task.id)

    async def progress_saved() -> bool:
        row = await store.get(task.id)
        return row is not None and (row.status, row.progress, row.processed, row.total) == (
            "processing", 10.0, 10, 100)

    await wait_for(progress_saved, message="progress flushed to the database")
    assert runner.live_progress(task.id) == Progress(10.0, 10, 100)
    assert runner.running == 1 and runner.queue_depth == 0

    cancelled = await runner.cancel(task.id)

    assert cancelled is not None and cancelled.status == "cancelled"
    await wait_for(lambda: runner.running == 0, timeout=2.0, message="the engine to stop")
    assert engine.cancelled == 1
    assert await status_of(store, task.id) == "cancelled"


async def test_before_start_tasks_wait_in_the_database_and_a_cancelled_one_never_runs(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    engine = ProgressEngine()
    runner = make_runner(engine)
    waiting, _ = await store.create_or_get(task_body(attempt=1))
    cancelled, _ = await store.create_or_get(task_body(attempt=2))
    runner.submit(waiting.id)  # not started: ignored, the row waits for a sweep
    assert runner.queue_depth == 0
    await runner.cancel(cancelled.id)

    await runner.start()

    assert (await finished(store, waiting.id)).status == "completed"
    runner.submit(cancelled.id)
    await wait_for(lambda: runner.queue_depth == 0 and runner.running == 0)
    assert [r.job_id for r in engine.requests] == ["job-1"]
    assert await status_of(store, cancelled.id) == "cancelled"


OUTCOMES = {  # job id: (what the engine raises, status, error recorded)
    "stage-failed": (StageFailed("ods: column qty not found"), "failed",
                     "ods: column qty not found"),
    "sandbox": (SandboxViolation("COPY is not allowed"), "failed", "COPY is not allowed"),
    "unexpected": (RuntimeError("boom"), "failed", "internal engine error: RuntimeError: boom"),
    "engine-cancelled": (StageCancelled("stopped by the engine"), "cancelled", None),
}


async def test_engine_outcomes_are_recorded(
    store: TaskStore, make_runner: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(FailingEngine({job: error for job, (error, _, _) in OUTCOMES.items()}),
                         workers=4)
    await runner.start()
    ids = {}
    with caplog.at_level(logging.INFO, logger="strata.executor"):
        for job_id in OUTCOMES:
            task, _ = await store.create_or_get(task_body(job_id=job_id))
            runner.submit(task.id)
            ids[job_id] = task.id
        done = {job_id: await finished(store, task_id) for job_id, task_id in ids.items()}

    for job_id, (_, status, message) in OUTCOMES.items():
        task = done[job_id]
        assert (task.status, task.error, task.result) == (status, message, None), job_id
        assert (task.progress, task.processed, task.total) == (50.0, 5, 10)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "boom" in str(tracebacks[0].exc_info)


async def test_a_task_with_unreadable_params_fails_with_a_message(
    store: TaskStore, make_runner: RunnerFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    task, _ = await store.create_or_get(task_body())
    await set_row(sessions, task.id, params={"source": {"path": "../etc/passwd"}})
    engine = ProgressEngine()
    runner = make_runner(engine)
    await runner.start()
    runner.submit(task.id)

    done = await finished(store, task.id)

    assert done.status == "failed" and done.error is not None
    assert done.error.startswith("invalid task:") and engine.requests == []


async def test_the_pool_runs_at_most_workers_stages_at_once(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    engine = BlockingEngine()
    runner = make_runner(engine, workers=1)
    await runner.start()
    first, _ = await store.create_or_get(task_body(attempt=1))
    second, _ = await store.create_or_get(task_body(attempt=2))
    runner.submit(first.id)
    runner.submit(second.id)

    await wait_for(lambda: engine.started == 1 and runner.queue_depth == 1)
    assert runner.running == 1 and await status_of(store, second.id) == "created"

    await runner.cancel(first.id)
    await wait_for(lambda: engine.started == 2 and runner.queue_depth == 0)
    assert await status_of(store, second.id) == "processing"
    await runner.cancel(second.id)


# --- leases, recovery, replicas ----------------------------------------------------------------


async def test_start_recovers_a_task_a_dead_runner_left_processing_but_not_a_finished_one(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    past = utcnow() - timedelta(minutes=5)
    orphan, _ = await store.create_or_get(task_body(attempt=1))
    assert await store.claim(orphan.id, "dead-runner", 30.0, now=past) is not None
    await store.save_progress([(orphan.id, 40.0, 40, 100)], "dead-runner")
    done, _ = await store.create_or_get(task_body(attempt=2))
    assert await store.claim(done.id, "dead-runner", 30.0, now=past) is not None
    assert await store.finish(done.id, "dead-runner", TaskStatus.COMPLETED, result={"rows": 7})

    engine = ProgressEngine()
    runner = make_runner(engine)
    await runner.start()

    rerun = await finished(store, orphan.id)
    assert rerun.status == "completed" and rerun.runner == runner.runner_id
    assert [r.job_id for r in engine.requests] == ["job-1"] and len(engine.requests) == 1
    untouched = await store.get(done.id)
    assert untouched is not None and untouched.result == {"rows": 7}
    assert untouched.runner == "dead-runner"


async def test_a_live_lease_of_another_runner_is_respected_until_it_lapses(
    store: TaskStore, make_runner: RunnerFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    task, _ = await store.create_or_get(task_body())
    assert await store.claim(task.id, "busy-replica", 30.0) is not None
    runner = make_runner(ProgressEngine())
    await runner.start()

    assert await runner.sweep() == []
    runner.submit(task.id)  # even when asked directly, a held task is not taken
    await wait_for(lambda: runner.queue_depth == 0 and runner.running == 0)
    assert await status_of(store, task.id) == "processing"

    await set_row(sessions, task.id, lease_expires_at=utcnow() - timedelta(seconds=1))
    await runner.sweep()
    rerun = await finished(store, task.id)
    assert rerun.status == "completed" and rerun.runner == runner.runner_id


async def test_leases_are_renewed_while_a_stage_runs(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    runner = make_runner(BlockingEngine(), lease_seconds=0.9)
    other = make_runner(ProgressEngine())
    await runner.start()
    task, _ = await store.create_or_get(task_body())
    runner.submit(task.id)

    async def leased() -> datetime | None:
        row = await store.get(task.id)
        return row.lease_expires_at if row is not None else None

    first_lease = await wait_for(leased)

    async def renewed() -> bool:
        row = await store.get(task.id)
        return row is not None and row.lease_expires_at is not None and (
            row.lease_expires_at > first_lease)

    await wait_for(renewed, timeout=3.0)
    await other.start()
    assert await other.sweep() == []
    assert (await store.get(task.id)).runner == runner.runner_id  # type: ignore[union-attr]
    await runner.cancel(task.id)


async def test_a_cancel_through_another_replica_stops_the_stage_here(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    engine = BlockingEngine()
    here, there = make_runner(engine), make_runner(ProgressEngine())
    await here.start()
    await there.start()
    task, _ = await store.create_or_get(task_body())
    here.submit(task.id)
    await wait_for(lambda: engine.started == 1)

    await there.cancel(task.id)

    await wait_for(lambda: engine.cancelled == 1 and here.running == 0, timeout=3.0)
    assert await status_of(store, task.id) == "cancelled"


async def test_a_task_taken_over_after_a_lost_lease_is_stopped_here_and_not_overwritten(
    store: TaskStore, make_runner: RunnerFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    engine = BlockingEngine()
    runner = make_runner(engine)
    await runner.start()
    task, _ = await store.create_or_get(task_body())
    runner.submit(task.id)
    await wait_for(lambda: engine.started == 1)

    await set_row(sessions, task.id, runner="new-owner",
                  lease_expires_at=utcnow() + timedelta(minutes=1))

    await wait_for(lambda: engine.cancelled == 1 and runner.running == 0, timeout=3.0)
    row = await store.get(task.id)
    assert row is not None and (row.status, row.runner) == ("processing", "new-owner")


def test_runner_ids_are_unique_per_runner() -> None:
    ids = {new_runner_id() for _ in range(5)}
    assert len(ids) == 5 and all(len(i) <= 100 for i in ids)


# --- shutdown ----------------------------------------------------------------------------------


async def test_stop_cancels_running_stages_and_leaves_them_for_another_runner(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    engine = BlockingEngine()
    old = make_runner(engine)
    await old.start()
    task, _ = await store.create_or_get(task_body())
    old.submit(task.id)
    await wait_for(lambda: engine.started == 1)

    await old.stop(grace=0)

    assert engine.cancelled == 1
    row = await store.get(task.id)
    assert row is not None and (row.status, row.runner, row.lease_expires_at) == (
        "processing", None, None)

    new = make_runner(ProgressEngine())
    await new.start()
    rerun = await finished(store, task.id)
    assert rerun.status == "completed" and rerun.runner == new.runner_id


async def test_stop_lets_a_stage_finish_within_the_grace_period(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    engine = BlockingEngine()
    runner = make_runner(engine)
    await runner.start()
    task, _ = await store.create_or_get(task_body())
    runner.submit(task.id)
    await wait_for(lambda: engine.started == 1)

    engine.release()
    await runner.stop(grace=10)

    assert engine.cancelled == 0
    assert await status_of(store, task.id) == "completed"


async def test_stop_abandons_an_engine_that_ignores_cancellation(
    store: TaskStore, make_runner: RunnerFactory
) -> None:
    engine = BlockingEngine(honour_cancel=False)
    runner = make_runner(engine)
    await runner.start()
    task, _ = await store.create_or_get(task_body())
    runner.submit(task.id)
    await wait_for(lambda: engine.started == 1)

    await runner.stop(grace=0, hard_timeout=0.1)

    row = await store.get(task.id)
    assert row is not None and (row.status, row.runner) == ("processing", None)
    engine.release()
    await wait_for(lambda: engine.returned == 1)
    assert await status_of(store, task.id) == "processing"  # its late result is not recorded
