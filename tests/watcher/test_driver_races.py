"""The driver never acts on a job a user stopped after the watcher claimed it."""

from __future__ import annotations

from pathlib import Path

import httpx
from aiolimiter import AsyncLimiter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.batch.client import BatchClient
from app.batch.testing import InMemoryBatchManager
from app.domain.params import JobParams, Source
from app.services.jobs import JobService, NewJob
from app.store import jobs as store
from app.store.db import transaction
from app.store.types import utcnow
from app.watcher.event import StageDriver


def refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the executor must not be called: {request.method} {request.url}")


async def test_a_job_cancelled_after_its_claim_is_left_alone(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    service = JobService(sessions)
    job, _ = await service.create("local", NewJob("j", JobParams(source=Source(path="a/*.csv"))))
    async with transaction(sessions) as session:
        [claimed] = await store.claim_runnable(session, owner="w", now=utcnow(),
                                               lease_seconds=30, limit=10)
    await service.act(None, job.id, "cancel")
    executor = InMemoryBatchManager()
    driver = StageDriver(sessions, executor, AsyncLimiter(100, 1), tmp_path)
    stale = claimed  # still says Pending
    assert await driver.advance(stale) is None  # its write loses to the cancel
    # the start creates the first stage's task before its commit; once the commit loses to
    # the cancel, that task is cancelled too: nothing would ever look at it
    assert list(executor.keys) == [f"{job.id}:LandingToODS:1"]
    assert executor.cancelled == list(executor.keys.values())
    claimed.status = "Cancelled"  # as a claim that read the row after the cancel sees it
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse),
                                 base_url="http://executor") as http:
        driver = StageDriver(sessions, BatchClient(http), AsyncLimiter(100, 1), tmp_path)
        assert (await driver.advance(claimed)).status == "Cancelled"
    assert (await service.get(None, job.id)).status == "Cancelled"
    events = [e.event for e in await service.events(None, job.id)]
    assert events == ["create", "cancel"]


async def test_a_stopped_job_is_never_claimed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    service = JobService(sessions)
    job, _ = await service.create("local", NewJob("j", JobParams(source=Source(path="a/*.csv"))))
    await service.act(None, job.id, "cancel")
    async with transaction(sessions) as session:
        assert await store.claim_runnable(session, owner="w", now=utcnow(), lease_seconds=30,
                                          limit=10) == []
