"""JobService, the job resource's use cases, on both backends: what each one stores and reports."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain import layout
from app.domain.errors import IdempotencyConflict, IllegalAction, JobNotFound, OutputNotReady
from app.domain.params import JobParams, Source
from app.domain.states import JobStatus
from app.metrics import Metrics
from app.services.jobs import JobService, NewJob
from app.store import jobs as store
from app.store.db import transaction

NEW = NewJob("orders", JobParams(source=Source(path="orders/*.csv")))


class Executor:
    """Records the tasks the service asks to cancel."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    async def cancel(self, task_id: str) -> None:
        self.cancelled.append(task_id)


@pytest.fixture
def executor() -> Executor:
    return Executor()


@pytest.fixture
def service(
    sessions: async_sessionmaker[AsyncSession], executor: Executor, tmp_path: Path
) -> JobService:
    return JobService(sessions, cancel_task=executor.cancel, metrics=Metrics(),
                      warehouse_dir=tmp_path / "warehouse")


def transitions(service: JobService, event: str, source: str, target: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "strata_job_transitions_total",
        {"event": event, "from_status": source, "to_status": target})
    return value or 0.0


async def with_running_task(service: JobService, job_id: str, task_id: str) -> None:
    """Put the job in its first stage with a task in the executor, as the watcher would."""
    async with transaction(service.sessions) as session:
        job = await store.get_job(session, job_id)
        assert job is not None
        job.status = "LandingToODS"
        job.results = {"batch": {"task_id": task_id, "stage": "LandingToODS", "attempt": 1}}


async def test_create_stores_a_pending_job_and_counts_it(service: JobService) -> None:
    woken: list[str | None] = []
    service.wake = woken.append

    job, created = await service.create("alice", NEW)

    assert created and job.status == JobStatus.PENDING and job.owner == "alice"
    assert (await service.get("alice", job.id)).params == NEW.params.model_dump(mode="json")
    assert [e.event for e in await service.events("alice", job.id)] == ["create"]
    assert transitions(service, "create", "", "Pending") == 1
    assert woken == [job.id]


async def test_create_with_a_key_is_idempotent_and_refuses_another_body(
    service: JobService,
) -> None:
    first, created = await service.create("alice", NEW, idempotency_key="k-1")
    again, created_again = await service.create("alice", NEW, idempotency_key="k-1")
    other_owner, _ = await service.create("bob", NEW, idempotency_key="k-1")

    assert created and not created_again and again.id == first.id
    assert other_owner.id != first.id, "keys belong to their owner"
    with pytest.raises(IdempotencyConflict):
        await service.create("alice", NewJob("other", NEW.params), idempotency_key="k-1")


async def test_another_owners_job_is_not_found(service: JobService) -> None:
    job, _ = await service.create("alice", NEW)

    for call in (service.get("bob", job.id), service.events("bob", job.id),
                 service.update("bob", job.id, {"name": "x"}), service.delete("bob", job.id)):
        with pytest.raises(JobNotFound):
            await call
    assert (await service.get(None, job.id)).id == job.id  # an admin sees every owner


async def test_update_renames_and_its_suspend_is_a_counted_transition(service: JobService) -> None:
    job, _ = await service.create("alice", NEW)

    job = await service.update("alice", job.id, {"name": "renamed", "suspend": True})
    assert (job.name, job.suspend) == ("renamed", True)
    job = await service.update("alice", job.id, {"suspend": False, "description": "d"})

    assert not job.suspend and job.description == "d"
    assert [e.event for e in await service.events("alice", job.id)] == [
        "create", "suspend", "resume"]
    assert transitions(service, "suspend", "Pending", "Pending") == 1
    assert transitions(service, "resume", "Pending", "Pending") == 1


async def test_cancel_stops_the_job_and_its_running_task(
    service: JobService, executor: Executor
) -> None:
    job, _ = await service.create("alice", NEW)
    await with_running_task(service, job.id, "task-1")

    job = await service.act("alice", job.id, "cancel")

    assert job.status == JobStatus.CANCELLED and job.ended_at is not None
    assert executor.cancelled == ["task-1"]
    assert transitions(service, "cancel", "LandingToODS", "Cancelled") == 1
    with pytest.raises(IllegalAction):
        await service.act("alice", job.id, "cancel")


async def test_retry_resumes_a_cancelled_job_where_it_stopped(service: JobService) -> None:
    job, _ = await service.create("alice", NEW)
    with pytest.raises(IllegalAction):
        await service.act("alice", job.id, "retry")
    await service.act("alice", job.id, "cancel")

    job = await service.act("alice", job.id, "retry")

    assert job.status == JobStatus.PENDING and job.attempt == 2 and job.ended_at is None


async def test_delete_removes_the_job_and_cancels_its_task(
    service: JobService, executor: Executor
) -> None:
    job, _ = await service.create("alice", NEW)
    await with_running_task(service, job.id, "task-9")

    await service.delete("alice", job.id)

    assert executor.cancelled == ["task-9"]
    with pytest.raises(JobNotFound):
        await service.get(None, job.id)


async def test_output_is_served_only_for_a_succeeded_job(service: JobService) -> None:
    job, _ = await service.create("alice", NEW)
    with pytest.raises(OutputNotReady):
        await service.output("alice", job.id, "json", 10)

    assert service.warehouse_dir is not None
    ds = layout.layer_dir(service.warehouse_dir, job.id, "ds")
    ds.mkdir(parents=True)
    pq.write_table(pa.table({"n": [1, 2, 3]}), ds / "part-00000.parquet")
    async with transaction(service.sessions) as session:
        stored = await store.get_job(session, job.id)
        assert stored is not None
        stored.status = JobStatus.SUCCEEDED.value

    rows = await service.output("alice", job.id, "csv", 2, offset=1)
    assert b"".join(rows) == b"n\r\n2\r\n3\r\n"
    with pytest.raises(JobNotFound):
        await service.output("bob", job.id, "json", 10)
