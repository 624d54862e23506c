"""A hop's transition is one statement on the autocommit pool when one statement says it all,
and a transaction otherwise — with the same rows written either way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiolimiter import AsyncLimiter
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.batch.testing import InMemoryBatchManager
from app.domain.params import JobParams, Source
from app.domain.webhooks import EventType
from app.services.jobs import JobService, NewJob
from app.services.webhooks import NewWebhook, WebhookService
from app.store import jobs as store
from app.store.db import create_read_engine, session_factory, transaction
from app.store.models import Job
from app.watcher.event import StageDriver
from tests.webhooks.outbox import deliveries


class Statements:
    """The statements an engine ran; with `begins`, its transactions' BEGINs too (an
    autocommit engine starts none on the server, whatever SQLAlchemy's own event says)."""

    def __init__(self, engine: AsyncEngine, *, begins: bool = True) -> None:
        self.seen: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._statement)
        if begins:
            event.listen(engine.sync_engine, "begin", lambda *_: self.seen.append("BEGIN"))

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement.split(None, 1)[0].upper())

    def take(self) -> list[str]:
        seen, self.seen = self.seen, []
        return seen


@pytest.fixture
async def single_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_read_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def single(single_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(single_engine)


async def first_stage_done(
    sessions: async_sessionmaker[AsyncSession], single: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> tuple[StageDriver, Job]:
    """A driver saving on the autocommit pool, and a job of "ann" whose first stage's task
    has just completed: its next advance is the hop under test."""
    executor = InMemoryBatchManager()
    stage_driver = StageDriver(sessions, executor, AsyncLimiter(1000, 1), tmp_path, single=single)
    job = await stage_driver.advance(await new_job(sessions))
    assert job is not None
    executor.start(job.results["batch"]["task_id"])
    executor.complete(job.results["batch"]["task_id"])
    return stage_driver, job


async def new_job(sessions: async_sessionmaker[AsyncSession], owner: str = "ann") -> Job:
    job, _ = await JobService(sessions).create(
        owner, NewJob("j", JobParams(source=Source(path="a/*.csv"))))
    return job


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def test_a_hop_without_webhooks_is_one_statement_on_postgres_and_a_transaction_on_sqlite(
    sessions: async_sessionmaker[AsyncSession], single: async_sessionmaker[AsyncSession],
    db_engine: AsyncEngine, single_engine: AsyncEngine, tmp_path: Path,
) -> None:
    stage_driver, job = await first_stage_done(sessions, single, tmp_path)
    pooled, autocommit = Statements(db_engine), Statements(single_engine, begins=False)

    job = await stage_driver.advance(job)

    assert job is not None and job.status == "ODSToDWD"
    if is_postgres(db_engine):
        assert pooled.take() == []
        assert autocommit.take() == ["WITH"]  # UPDATE and event INSERT in one statement
    else:
        assert pooled.take() == ["BEGIN", "UPDATE", "INSERT"]
    events = [e.event for e in await JobService(sessions).events("ann", job.id)]
    assert events == ["create", "start", "stage_done"]
    async with sessions() as session:
        stored = await store.get_job(session, job.id)
    assert stored is not None and stored.version == job.version
    assert stored.results["batch"]["task_id"] == job.results["batch"]["task_id"]


async def test_a_transition_of_an_owner_with_a_webhook_queues_its_message(
    sessions: async_sessionmaker[AsyncSession], single: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    hook = await WebhookService(sessions).create(
        "ann", NewWebhook("http://hooks.example/strata", [EventType.JOB_STAGE_DONE]))
    stage_driver, job = await first_stage_done(sessions, single, tmp_path)

    job = await stage_driver.advance(job)

    assert job is not None and job.status == "ODSToDWD"
    assert [(d.type, d.job_id) for d in await deliveries(sessions, hook.id)] == [
        ("job.stage_done", job.id)]


async def test_a_stale_transition_writes_nothing(
    sessions: async_sessionmaker[AsyncSession], single: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    stage_driver, job = await first_stage_done(sessions, single, tmp_path)
    async with transaction(sessions) as session:  # someone else writes the job meanwhile
        other = await store.get_job(session, job.id)
        assert other is not None
        session.expunge(other)
        other.description = "renamed"
        await store.save_job(session, other, other.version)

    assert await stage_driver.advance(job) is None

    events = [e.event for e in await JobService(sessions).events("ann", job.id)]
    assert events == ["create", "start"]
    async with sessions() as session:
        stored = await store.get_job(session, job.id)
    assert stored is not None and (stored.status, stored.description) == (
        "LandingToODS", "renamed")
