"""The job GET's driver-level read answers exactly what the pooled SQLAlchemy read answers."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.schemas import job_response
from app.domain import conditions as cond
from app.domain.errors import JobNotFound
from app.domain.params import JobParams
from app.services.jobs import JobService
from app.store import jobs as store
from app.store.db import create_read_engine, transaction
from app.store.documents import job_document
from app.store.job_reader import JobReader, ReadUnavailable, SqliteJobReader, create_job_reader
from app.store.models import Job, JobEvent
from tests.databases import PG_ADMIN_DSN

NOW = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


def full_job(orders_job: dict[str, Any], job_id: str, owner: str = "ann") -> Job:
    """A job with every column the document shows filled in, awkward characters included."""
    conditions = cond.set_condition([], cond.SUSPENDED, cond.TRUE, "Suspended", "née ✓", NOW)
    return Job(
        id=job_id, name="orders-daily", description="é \"quoted\"", owner=owner,
        status="DWDToDWS", suspend=True,
        params=JobParams.model_validate(orders_job["params"]).model_dump(mode="json"),
        results={"batch": {"task_id": "t1", "stage": "DWDToDWS", "progress": 41.5},
                 "layers": {"ods": {"rows": 10}, "dwd": {"rows": 9, "rejects": 1}}},
        conditions=conditions, attempt=2, created_at=NOW, updated_at=NOW + timedelta(seconds=3),
        started_at=NOW + timedelta(seconds=1), ended_at=None,
        pipeline={"name": "nightly", "version": 3, "parameters": {"n": 1.5}},
    )


async def insert(sessions: async_sessionmaker[AsyncSession], job: Job) -> None:
    event = JobEvent(job_id=job.id, event="create", from_status=None, to_status="Pending",
                     attempt=1, message="", at=NOW)
    async with transaction(sessions) as session:
        await store.insert_job(session, job, event)


@pytest.fixture
async def reader(database_url: str) -> AsyncIterator[JobReader]:
    found = create_job_reader(database_url)
    assert found is not None
    yield found
    await found.close()


@pytest.fixture
async def pooled(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_read_engine(database_url)
    yield engine
    await engine.dispose()


async def test_the_driver_read_gives_the_pooled_reads_document(
    sessions: async_sessionmaker[AsyncSession], reader: JobReader, pooled: AsyncEngine,
    orders_job: dict[str, Any],
) -> None:
    await insert(sessions, full_job(orders_job, "j-1"))
    async with pooled.connect() as conn:
        expected = await store.read_job(conn, "j-1")
    assert expected is not None
    fast = await reader.read("j-1", None)
    assert fast is not None
    assert job_document(fast) == job_document(expected)
    assert job_response(fast).body == job_response(expected).body


async def test_an_owner_reads_only_their_own_job(
    sessions: async_sessionmaker[AsyncSession], reader: JobReader, orders_job: dict[str, Any],
) -> None:
    await insert(sessions, full_job(orders_job, "j-ann", owner="ann"))
    assert await reader.read("j-ann", "ann") is not None
    assert await reader.read("j-ann", "bob") is None
    assert await reader.read("no-such-job", None) is None


async def test_a_committed_write_is_seen_by_the_next_read(
    sessions: async_sessionmaker[AsyncSession], reader: JobReader, orders_job: dict[str, Any],
) -> None:
    await insert(sessions, full_job(orders_job, "j-2"))
    assert (await reader.read("j-2", None)).status == "DWDToDWS"  # type: ignore[union-attr]
    async with transaction(sessions) as session:
        await session.execute(update(Job).where(Job.id == "j-2")  # type: ignore[arg-type]
                              .values(status="Succeeded", version=Job.version + 1))
    assert (await reader.read("j-2", None)).status == "Succeeded"  # type: ignore[union-attr]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_outside_wal_is_left_to_the_pooled_read(
    database_url: str, sessions: async_sessionmaker[AsyncSession], pooled: AsyncEngine,
    orders_job: dict[str, Any],
) -> None:
    """Outside WAL a reader waits for writers; that wait must not happen on the event loop."""
    path = database_url.split("///", 1)[1]
    await insert(sessions, full_job(orders_job, "j-3"))
    await sessions.kw["bind"].dispose()
    await pooled.dispose()
    plain = sqlite3.connect(path)
    plain.execute("PRAGMA journal_mode=DELETE")
    plain.close()
    reader = SqliteJobReader(path)
    with pytest.raises(ReadUnavailable):
        await reader.read("j-3", None)
    service = JobService(sessions, reader=pooled, job_reader=reader)
    assert (await service.read(None, "j-3")).id == "j-3"
    with pytest.raises(JobNotFound):
        await service.read(None, "no-such-job")
    await reader.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_reads_survive_dropped_connections(
    database_url: str, sessions: async_sessionmaker[AsyncSession], reader: JobReader,
    orders_job: dict[str, Any],
) -> None:
    await insert(sessions, full_job(orders_job, "j-4"))
    assert await reader.read("j-4", None) is not None
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        dropped = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()", database_url.rsplit("/", 1)[1])
    finally:
        await admin.close()
    assert dropped >= 1
    for _ in range(3):
        assert await reader.read("j-4", None) is not None
