"""How often the watcher asks the executor about a task: as little as it can without delay."""

from __future__ import annotations

from pathlib import Path

from aiolimiter import AsyncLimiter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.batch.testing import InMemoryBatchManager
from app.domain.params import JobParams, Source
from app.services.jobs import JobService, NewJob
from app.store.models import Job
from app.watcher.event import StageDriver
from app.watcher.watcher import Watcher


async def started_job(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, queued_poll_seconds: float = 5.0
) -> tuple[InMemoryBatchManager, StageDriver, Job]:
    """A job whose first stage's task was just created on an executor that never moves."""
    executor = InMemoryBatchManager()  # its queue never moves: every task stays `created`
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
    for _ in range(3):  # the create's answer said queued a moment ago
        job = await driver.advance(job, woken=False) or job
    assert executor.polls == 0, "a task still queued a moment ago was asked again"
    await driver.advance(job, woken=True)  # a wake-up for this job is always answered
    assert executor.polls == 1


async def test_a_queued_task_is_polled_again_once_the_interval_passed(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    executor, driver, job = await started_job(sessions, tmp_path, queued_poll_seconds=0.0)
    for _ in range(3):
        job = await driver.advance(job, woken=False) or job
    assert executor.polls == 3


async def test_a_pass_over_many_running_jobs_polls_their_tasks_with_one_request(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    executor = InMemoryBatchManager(start_on_poll=True)
    driver = StageDriver(sessions, executor, AsyncLimiter(100, 1), tmp_path)
    service = JobService(sessions)
    for i in range(3):
        await service.create("local", NewJob(f"j{i}", JobParams(source=Source(path="a/*.csv"))))
    watcher = Watcher(sessions, driver, interval=60)
    assert await watcher.tick() == 3  # each job starts and creates its first task
    assert (executor.polls, executor.batch_polls) == (0, 0)

    assert await watcher.tick() == 3

    assert (executor.polls, executor.batch_polls) == (0, 1)
    jobs = [await service.get("local", job_id) for job_id in {t.job_id for t in
                                                               executor.tasks.values()}]
    assert all(job.results["batch"]["status"] == "processing" for job in jobs), \
        "each job took its task's state from the batched answer"
