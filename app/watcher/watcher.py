"""Claim runnable jobs and dispatch each to the stage driver, in a bounded pool.

Each pass leases a batch of runnable, non-suspended jobs with one query (so the queries that find
work do not grow with the number of jobs) and starts advancing every one that is not already
being advanced here, at most `max_workers` at once. A pass does not wait for the jobs it started:
a wake-up (a job was created, a task finished) starts the next pass at once, which is what makes
the hop from one stage to the next take milliseconds, not a poll interval. Polling every
`interval` seconds stays the source of truth. Leases are renewed by every pass that sees the job
and released on a clean stop; a dead replica's leases lapse and another replica takes its jobs.
`stop()` lets running advances finish, so every job is left at a durable state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.contract.tasks import TaskPublic
from app.logs import bound
from app.metrics import Metrics
from app.store import jobs as store
from app.store.db import transaction
from app.store.models import Job
from app.store.types import utcnow
from app.watcher.event import StageDriver
from app.watcher.loop import PassLoop

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
        single: Any = None,
    ) -> None:
        self.sessions = sessions
        self.single = single or sessions
        """Sessions for the claim, one atomic statement: on an autocommit pool (the read pool)
        it costs one round trip instead of three (BEGIN, the UPDATE, COMMIT)."""
        self.driver = driver
        self.interval = interval
        self.max_workers = max_workers
        self.lease_seconds = lease_seconds
        self.claim_limit = claim_limit
        self.owner = owner or replica_id()
        self.clock = clock
        self.metrics = metrics or driver.metrics
        self._loop = PassLoop("strata-watcher")
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max_workers)
        self._hot: set[str] = set()
        self._hot_later: set[str] = set()
        self._full_pass = True

    def wake(self, job_id: str | None = None) -> None:
        """Look at `job_id` now (a job was created, its task finished); None: at every job."""
        if job_id is None:
            self._full_pass = True
        else:
            self._hot.add(job_id)
        self._loop.wake()

    def task_finished(self, task: TaskPublic) -> None:
        """The embedded executor recorded a task's end: hand it to the driver, wake its job."""
        self.driver.task_finished(task)
        self.wake(task.job_id)

    @property
    def started(self) -> bool:
        """Its loop runs: started and not yet stopped."""
        return self._loop.started

    def start(self) -> None:
        self._loop.start(self._run)

    async def stop(self) -> None:
        """Stop dispatching, let running advances finish, and hand back this replica's leases."""
        await self._loop.stop()
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        try:
            async with transaction(self.sessions) as session:
                await store.release_owner_leases(session, owner=self.owner)
        except Exception as exc:  # the leases lapse on their own
            log.warning("could not release leases on stop: %s", exc)

    async def _run(self) -> None:
        failures = 0
        self._full_pass = True
        while not self._loop.stopping.is_set():
            self._loop.begin_pass()
            hot, self._hot = self._hot, set()
            full, self._full_pass = self._full_pass, False
            try:
                await self.dispatch(None if full or not hot else hot, woken=hot)
                failures = 0
            except Exception:
                failures += 1
                log.exception("watcher pass failed (%d in a row); trying again", failures)
            delay = self.interval if failures == 0 else min(self.interval * 2**failures, 30.0)
            if not await self._loop.sleep(delay):
                self._full_pass = True  # the poll: every runnable job is looked at

    async def tick(self) -> int:
        """One pass that also waits for the advances it started (for tests and benchmarks)."""
        started = await self.dispatch()
        if started:
            await asyncio.gather(*started)
        return len(started)

    async def dispatch(
        self, only: set[str] | None = None, *, woken: set[str] | None = None
    ) -> list[asyncio.Task[None]]:
        """Claim runnable jobs (all, or `only` these) and advance those not in flight here.

        `woken`: the jobs this pass is a wake-up for (None: all of them); the others are being
        looked at by the periodic poll, which may leave a queued task unpolled for a while.
        """
        with self.metrics.tick_seconds.time():
            now = self.clock()
            async with transaction(self.single) as session:
                jobs = await store.claim_runnable(
                    session, owner=self.owner, now=now, lease_seconds=self.lease_seconds,
                    limit=self.claim_limit, only=sorted(only) if only is not None else None,
                )
            oldest = min((job.updated_at for job in jobs), default=now)
            self.metrics.tick_lag.set(max((now - oldest).total_seconds(), 0.0))
            started = []
            fresh = [job for job in jobs if job.id not in self._inflight]
            if only is not None:  # look again at the busy ones when their advance ends
                self._hot_later.update(job.id for job in jobs if job.id in self._inflight)
            polls = {job.id: task_id for job in fresh if (task_id := self.driver.poll_wanted(
                job, woken=woken is None or job.id in woken)) is not None}
            if len(polls) > 1:  # one request for the pass instead of one per job
                await self.driver.poll_many(polls)
            for job in fresh:
                task = asyncio.create_task(self._advance(job, woken is None or job.id in woken),
                                           name=f"advance-{job.id}")
                self._inflight[job.id] = task
                started.append(task)
            self.metrics.jobs_claimed.inc(len(started))
            return started

    async def _advance(self, job: Job, woken: bool = True) -> None:
        try:
            async with self._slots:
                with bound(job_id=job.id, stage=job.status):
                    await self.driver.advance(job, woken=woken)
        except Exception:
            log.exception("job %s: advancing failed; it is retried on the next pass", job.id,
                          extra={"job_id": job.id})
        finally:
            self._inflight.pop(job.id, None)
            if job.id in self._hot_later:
                # a wake-up came while this job was busy and its pass skipped it: look again
                self._hot_later.discard(job.id)
                self.wake(job.id)
