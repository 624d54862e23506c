"""The stage driver's rules — retry, backoff, timeouts, a lost or unreachable executor — run
against the in-memory BatchManager with an injected clock: no engine, no network, no sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiolimiter import AsyncLimiter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.batch.testing import InMemoryBatchManager
from app.contract.tasks import TaskCreate, TaskPublic
from app.domain import conditions as cond
from app.domain import layout
from app.domain.params import JobParams, Source
from app.domain.states import STAGES, JobStatus, Stage
from app.services.jobs import JobService, NewJob
from app.store.db import create_read_engine, session_factory
from app.store.models import Job
from app.store.types import utcnow
from app.watcher.event import StageDriver

BACKOFF = 10.0


class Clock:
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Rig:
    """A job, the driver that advances it, the executor it talks to and the clock they share."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], warehouse: Path,
                 single: async_sessionmaker[AsyncSession] | None = None) -> None:
        self.clock = Clock()
        self.executor = InMemoryBatchManager(clock=self.clock)
        self.driver = StageDriver(sessions, self.executor, AsyncLimiter(1000, 1), warehouse,
                                  retry_backoff=BACKOFF, clock=self.clock, single=single)
        self.service = JobService(sessions, clock=self.clock)
        self.warehouse = warehouse

    async def create(self, **params: Any) -> Job:
        new = NewJob("j", JobParams(source=Source(path="a/*.csv"), **params))
        job, _ = await self.service.create("local", new)
        return job

    async def advance(self, job: Job) -> Job:
        advanced = await self.driver.advance(job)
        assert advanced is not None, "the driver lost a write it should have won"
        return advanced

    def task_of(self, job: Job) -> str:
        return str(job.results["batch"]["task_id"])


@pytest.fixture(params=["transaction", "statement"])
async def rig(
    request: pytest.FixtureRequest, sessions: async_sessionmaker[AsyncSession],
    database_url: str, tmp_path: Path,
) -> AsyncIterator[Rig]:
    """The driver saving every change in a transaction, or (as the service does) as one
    statement on the autocommit pool wherever one statement says it all."""
    if request.param == "transaction":
        yield Rig(sessions, tmp_path / "warehouse")
        return
    single = create_read_engine(database_url)
    yield Rig(sessions, tmp_path / "warehouse", session_factory(single))
    await single.dispose()


def condition(job: Job, kind: str) -> dict[str, Any]:
    found = cond.get_condition(job.conditions, kind)
    assert found is not None, f"no {kind} condition in {job.conditions}"
    return found


async def test_a_new_job_starts_and_creates_its_first_stage_task(rig: Rig) -> None:
    job = await rig.advance(await rig.create())

    assert job.status == Stage.LANDING_TO_ODS
    [sent] = rig.executor.created
    assert (sent.job_id, sent.stage, sent.attempt) == (job.id, Stage.LANDING_TO_ODS, 1)
    assert sent.idempotency_key == f"{job.id}:LandingToODS:1"
    assert sent.params == JobParams.model_validate(job.params)
    assert job.started_at == job.stage_started_at == rig.clock.now


async def test_a_completed_task_moves_the_job_to_the_next_stage(rig: Rig) -> None:
    job = await rig.advance(await rig.create())
    rig.executor.complete(rig.task_of(job), {"rows": 7, "rejects": 2, "path": "/w/ods"})

    job = await rig.advance(job)

    assert job.status == Stage.ODS_TO_DWD and job.attempt == 1
    assert job.results["layers"]["ods"]["rows"] == 7
    assert condition(job, Stage.LANDING_TO_ODS.value)["message"] == "ods: 7 rows, 2 rejects"


async def test_a_failed_task_is_retried_with_doubling_backoff_until_retries_run_out(
    rig: Rig,
) -> None:
    job = await rig.advance(await rig.create(retries=2))
    for retry, base in ((1, BACKOFF), (2, 2 * BACKOFF)):
        rig.executor.fail(rig.task_of(job), "disk full")
        failed_at = rig.clock.now
        job = await rig.advance(job)

        assert job.status == Stage.LANDING_TO_ODS and job.attempt == retry + 1
        assert job.next_run_at is not None
        waited = (job.next_run_at - failed_at).total_seconds()
        assert base / 2 <= waited <= base, (retry, waited)
        retrying = condition(job, Stage.LANDING_TO_ODS.value)
        assert retrying["reason"] == "Retrying" and f"retry {retry} of 2" in retrying["message"]

        rig.clock.advance(waited)  # the watcher claims it again once next_run_at has passed
        job = await rig.advance(job)
        assert rig.executor.created[-1].attempt == retry + 1, "no new task for the new attempt"

    rig.executor.fail(rig.task_of(job), "disk full")
    job = await rig.advance(job)

    assert job.status == JobStatus.FAILED
    failed = condition(job, cond.FAILED)
    assert failed["reason"] == "StageFailed"
    assert "after 3 attempt(s): disk full" in failed["message"]


async def test_a_stage_that_outlives_its_timeout_fails_and_its_task_is_cancelled(
    rig: Rig,
) -> None:
    job = await rig.advance(await rig.create(stage_timeout_seconds=60))
    rig.executor.start(rig.task_of(job))

    rig.clock.advance(60)
    job = await rig.advance(job)
    assert job.status == Stage.LANDING_TO_ODS, "at the limit is not yet over it"

    rig.clock.advance(1)
    job = await rig.advance(job)
    assert job.status == JobStatus.FAILED
    assert condition(job, cond.FAILED)["reason"] == "Timeout"
    assert "stage_timeout_seconds=60" in condition(job, cond.FAILED)["message"]
    assert rig.executor.cancelled == [rig.task_of(job)]


async def test_the_job_timeout_counts_across_stages(rig: Rig) -> None:
    job = await rig.advance(await rig.create(timeout_seconds=100, stage_timeout_seconds=80))
    rig.clock.advance(70)
    rig.executor.complete(rig.task_of(job))
    job = await rig.advance(job)  # the next stage starts with its own 80 s
    assert job.status == Stage.ODS_TO_DWD

    rig.clock.advance(31)
    job = await rig.advance(job)

    assert job.status == JobStatus.FAILED
    assert "timeout_seconds=100" in condition(job, cond.FAILED)["message"]


async def test_an_unreachable_executor_is_waited_for_not_failed(rig: Rig) -> None:
    job = await rig.create()
    rig.executor.unavailable = True

    job = await rig.advance(job)
    job = await rig.advance(job)  # the same news is written once

    assert job.status == Stage.LANDING_TO_ODS and not rig.executor.tasks
    assert condition(job, cond.EXECUTOR_REACHABLE)["status"] == cond.FALSE
    rig.executor.unavailable = False
    job = await rig.advance(job)
    assert rig.executor.tasks and condition(job, cond.EXECUTOR_REACHABLE)["status"] == cond.TRUE


async def test_a_task_the_executor_lost_is_created_again_under_the_same_key(rig: Rig) -> None:
    job = await rig.advance(await rig.create())
    lost = rig.task_of(job)
    rig.executor.forget(lost)

    job = await rig.advance(job)  # the poll finds it gone: forget its id
    assert job.results["batch"]["task_id"] is None
    job = await rig.advance(job)

    assert job.status == Stage.LANDING_TO_ODS and rig.task_of(job) != lost
    assert [t.idempotency_key for t in rig.executor.created] == [f"{job.id}:LandingToODS:1"] * 2


async def test_a_job_succeeds_only_when_its_ds_folder_exists(rig: Rig) -> None:
    job = await rig.advance(await rig.create())
    for _ in STAGES:
        rig.executor.complete(rig.task_of(job))
        job = await rig.advance(job)
    assert job.status == JobStatus.FAILED
    assert condition(job, cond.FAILED)["reason"] == "OutputMissing"

    other = await rig.advance(await rig.create())
    layout.layer_dir(rig.warehouse, other.id, "ds").mkdir(parents=True)
    for _ in STAGES:
        rig.executor.complete(rig.task_of(other))
        other = await rig.advance(other)
    assert other.status == JobStatus.SUCCEEDED
    assert other.results["output"]["url"] == f"/v1/jobs/{other.id}/output"


async def test_a_finished_stage_creates_the_next_task_and_records_it_with_the_transition(
    rig: Rig,
) -> None:
    job = await rig.advance(await rig.create())
    first = rig.task_of(job)
    rig.executor.complete(first)
    events_before = len(await rig.service.events("local", job.id))

    job = await rig.advance(job)

    assert job.status == Stage.ODS_TO_DWD
    [_, sent] = rig.executor.created
    assert sent.idempotency_key == f"{job.id}:ODSToDWD:1"
    assert job.results["batch"]["stage"] == Stage.ODS_TO_DWD
    assert rig.task_of(job) == rig.executor.keys[sent.idempotency_key] != first
    assert job.results["layers"]["ods"]["task_id"] == first
    assert rig.executor.polls == 1, "the task just created was polled right after its create"
    events = await rig.service.events("local", job.id)
    assert [e.event for e in events[events_before:]] == ["stage_done"]


async def test_a_finished_task_handed_over_is_taken_without_a_poll(rig: Rig) -> None:
    job = await rig.advance(await rig.create())
    rig.driver.task_finished(rig.executor.complete(rig.task_of(job), {"rows": 3}))

    job = await rig.advance(job)

    assert job.status == Stage.ODS_TO_DWD and job.results["layers"]["ods"]["rows"] == 3
    assert rig.executor.polls == 0


async def test_an_unfinished_task_handed_over_is_still_polled(rig: Rig) -> None:
    job = await rig.advance(await rig.create())
    rig.driver.task_finished(rig.executor.start(rig.task_of(job)))
    rig.executor.complete(rig.task_of(job))

    job = await rig.advance(job)

    assert job.status == Stage.ODS_TO_DWD and rig.executor.polls == 1


async def test_an_executor_gone_at_a_hop_leaves_the_job_at_the_next_stage_waiting(
    rig: Rig,
) -> None:
    job = await rig.advance(await rig.create())
    rig.driver.task_finished(rig.executor.complete(rig.task_of(job)))
    rig.executor.unavailable = True

    job = await rig.advance(job)

    assert job.status == Stage.ODS_TO_DWD and job.results["layers"]["ods"]
    assert condition(job, cond.EXECUTOR_REACHABLE)["status"] == cond.FALSE
    rig.executor.unavailable = False
    job = await rig.advance(job)
    assert rig.executor.created[-1].idempotency_key == f"{job.id}:ODSToDWD:1"
    assert rig.task_of(job) == rig.executor.keys[f"{job.id}:ODSToDWD:1"]


async def test_a_hop_replayed_after_a_crash_records_the_task_its_first_try_created(
    rig: Rig,
) -> None:
    job = await rig.advance(await rig.create())
    rig.executor.complete(rig.task_of(job))
    # the first try created the next stage's task, then died before its transition committed
    before = await rig.executor.create_task(TaskCreate(
        job_id=job.id, stage=Stage.ODS_TO_DWD, attempt=1,
        idempotency_key=f"{job.id}:ODSToDWD:1", params=JobParams.model_validate(job.params)))

    job = await rig.advance(job)

    assert job.status == Stage.ODS_TO_DWD and rig.task_of(job) == before.task_id
    assert len(rig.executor.tasks) == 2


class ChangedAtCreate(InMemoryBatchManager):
    """An executor during whose first create of `stage`'s task a user changes the job."""

    def __init__(self, rig: Rig, stage: Stage, change: Callable[[str], Awaitable[Any]]) -> None:
        super().__init__(clock=rig.clock)
        self.stage, self.change, self.changed = stage, change, False

    async def create_task(self, task: TaskCreate) -> TaskPublic:
        created = await super().create_task(task)
        if task.stage == self.stage and not self.changed:
            self.changed = True
            await self.change(task.job_id)
        return created


async def test_a_cancel_that_lands_while_the_next_task_is_created_cancels_that_task(
    rig: Rig,
) -> None:
    rig.executor = ChangedAtCreate(rig, Stage.ODS_TO_DWD,
                                   lambda job_id: rig.service.act("local", job_id, "cancel"))
    rig.driver.batch = rig.executor
    job = await rig.advance(await rig.create())
    rig.executor.complete(rig.task_of(job))

    assert await rig.driver.advance(job) is None  # the user's cancel won the write

    following = rig.executor.keys[f"{job.id}:ODSToDWD:1"]
    assert (await rig.service.get("local", job.id)).status == JobStatus.CANCELLED
    assert following in rig.executor.cancelled  # nothing will look at it: it must not run


async def test_a_harmless_change_while_the_next_task_is_created_keeps_that_task(
    rig: Rig,
) -> None:
    rig.executor = ChangedAtCreate(
        rig, Stage.ODS_TO_DWD,
        lambda job_id: rig.service.update("local", job_id, {"description": "renamed"}))
    rig.driver.batch = rig.executor
    job = await rig.advance(await rig.create())
    rig.executor.complete(rig.task_of(job))

    assert await rig.driver.advance(job) is None  # the rename won the write
    job = await rig.advance(await rig.service.get("local", job.id))

    following = rig.executor.keys[f"{job.id}:ODSToDWD:1"]
    assert job.status == Stage.ODS_TO_DWD and rig.task_of(job) == following
    assert rig.executor.cancelled == []
