"""Claim runnable jobs and dispatch each to the stage driver, in a bounded pool.

Each tick leases a batch of runnable, non-suspended jobs with one query (so queries to find work
do not grow with the number of jobs), advances them with at most `max_workers` at once, then
releases the leases. A tick is woken early by `wake()` (a job was created, a task finished);
polling every `interval` seconds stays the source of truth. `stop()` lets the running tick finish,
so every job is left at a durable state it can be resumed from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.metrics import Metrics
from app.store import jobs as store
from app.store.db import transaction
from app.store.models import Job
from app.store.types import utcnow
from app.watcher.event import StageDriver

log = logging.getLogger("strata.watcher")


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Watcher:
    def __init__(
        self,
        sessions: Any,
        driver: StageDriver,
        *,
        interval: float = 1.0,
        max_workers: int = 4,
        lease_seconds: float = 30.0,
        claim_limit: int = 200,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.driver = driver
        self.interval = interval
        self.max_workers = max_workers
        self.lease_seconds = lease_seconds
        self.claim_limit = claim_limit
        self.owner = owner or replica_id()
        self.clock = clock
        self.metrics = metrics or driver.metrics
        self.ticks = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="strata-watcher")

    async def stop(self) -> None:
        """Finish the running tick, then stop."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.tick()
                failures = 0
            except Exception:
                failures += 1
                log.exception("watcher tick failed (%d in a row); trying again", failures)
            delay = self.interval if failures == 0 else min(self.interval * 2**failures, 30.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def tick(self) -> int:
        """One pass: claim runnable jobs, advance each, release the claims. Returns the count."""
        self.ticks += 1
        with self.metrics.tick_seconds.time():
            return await self._tick()

    async def _tick(self) -> int:
        now = self.clock()
        async with transaction(self.sessions) as session:
            jobs = await store.claim_runnable(
                session, owner=self.owner, now=now, lease_seconds=self.lease_seconds,
                limit=self.claim_limit,
            )
        oldest = min((job.updated_at for job in jobs), default=now)
        self.metrics.tick_lag.set(max((now - oldest).total_seconds(), 0.0))
        if not jobs:
            return 0
        self.metrics.jobs_claimed.inc(len(jobs))
        pool = asyncio.Semaphore(self.max_workers)

        async def advance(job: Job) -> None:
            async with pool:
                try:
                    await self.driver.advance(job)
                except Exception:
                    log.exception("job %s: advancing failed; it is retried next tick", job.id)

        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(advance(job))
        async with transaction(self.sessions) as session:
            await store.release_leases(session, owner=self.owner, job_ids=[j.id for j in jobs])
        return len(jobs)
