"""How often the watcher asks the executor about a task: as little as it can without delay."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.batch.client import BatchClient, BatchStatus, BatchTask
from app.domain.params import JobParams, Source
from app.domain.states import Stage
from app.services.jobs import JobService, NewJob
from app.store.models import Job
from app.store.types import utcnow
from app.watcher.event import StageDriver


class QueuedExecutor(BatchClient):
    """An executor whose queue never moves: every task stays `created`. Counts the polls."""

    def __init__(self) -> None:  # nothing leaves the process
        self.tasks: dict[str, BatchTask] = {}
        self.polls = 0

    async def create_task(
        self, job_id: str, stage: str, attempt: int, idempotency_key: str,
        params: dict[str, Any], landing_scope: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> BatchTask:
        now = utcnow()
        task = BatchTask(task_id=str(uuid.uuid4()), job_id=job_id, stage=Stage(stage),
                         attempt=attempt, status=BatchStatus.CREATED, created_at=now,
                         updated_at=now)
        self.tasks[task.task_id] = task
        return task

    async def get_task_status(self, task_id: str) -> BatchTask:
        self.polls += 1
        return self.tasks[task_id]


async def started_job(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, queued_poll_seconds: float = 5.0
) -> tuple[QueuedExecutor, StageDriver, Job]:
    """A job whose first stage's task was just created on an executor that never moves."""
    executor = QueuedExecutor()
    driver = StageDriver(sessions, executor, AsyncLimiter(100, 1), tmp_path,
                         queued_poll_seconds=queued_poll_seconds)
    service = JobService(sessions)
    job, _ = await service.create("local", NewJob("j", JobParams(source=Source(path="a/*.csv"))))
    advanced = await driver.advance(job)
    assert advanced is not None and advanced.status == "LandingToODS"
    return executor, driver, advanced


async def test_a_new_task_is_not_polled_right_after_its_create_answered(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    executor, _, job = await started_job(sessions, tmp_path)
    assert executor.polls == 0
    assert job.results["batch"]["status"] == "created"


async def test_a_periodic_pass_leaves_a_queued_task_alone_for_a_while(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    executor, driver, job = await started_job(sessions, tmp_path, queued_poll_seconds=60)
    job = await driver.advance(job, woken=False) or job  # first look: nothing known yet
    assert executor.polls == 1
    for _ in range(3):
        job = await driver.advance(job, woken=False) or job
    assert executor.polls == 1, "a task still queued a moment ago was asked again"
    await driver.advance(job, woken=True)  # a wake-up for this job is always answered
    assert executor.polls == 2


async def test_a_queued_task_is_polled_again_once_the_interval_passed(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    executor, driver, job = await started_job(sessions, tmp_path, queued_poll_seconds=0.0)
    for _ in range(3):
        job = await driver.advance(job, woken=False) or job
    assert executor.polls == 3
