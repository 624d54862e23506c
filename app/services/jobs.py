"""The job resource's use cases: create (idempotently), read, change, act, delete."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from aiolimiter import AsyncLimiter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.domain import conditions as cond
from app.domain import layout
from app.domain.errors import (
    IdempotencyConflict,
    IllegalAction,
    JobNotFound,
    OutputNotReady,
    TooManyRequests,
)
from app.domain.inputs import pipeline_only_fields
from app.domain.params import JobParams
from app.domain.states import STAGES, JobStatus, Stage
from app.metrics import Metrics
from app.services.transitions import change_job, fire
from app.store import inputs as input_store
from app.store import jobs as store
from app.store import layers
from app.store.db import read_retrying, transaction
from app.store.job_reader import JobReader, ReadUnavailable, StoredJob
from app.store.models import Job, JobEvent
from app.store.notify import notify
from app.store.types import utcnow

log = logging.getLogger("strata.jobs")

CancelTask = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class NewJob:
    name: str
    params: JobParams
    description: str | None = None
    suspend: bool = False
    pipeline: dict[str, Any] | None = None
    """A pipeline run's record: name, version, trigger, scheduled_for, parameters."""
    pipeline_id: str | None = None
    request_body: dict[str, Any] | None = None
    """What an Idempotency-Key guards, when it is not the job itself (a pipeline run request)."""
    claim: Callable[[AsyncSession, Job], Awaitable[None]] | None = None
    """Claims the run's input in the create transaction, before the job is inserted."""


def request_hash(new: NewJob) -> str:
    body = new.request_body or {
        "name": new.name, "description": new.description, "suspend": new.suspend,
        "params": new.params.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def resume_point(job: Job) -> str:
    """Where a retried job resumes: the first stage whose layer was not written."""
    if job.started_at is None:
        return JobStatus.PENDING.value
    layers = (job.results or {}).get("layers", {})
    for stage in STAGES:
        if stage.layer not in layers:
            return stage.value
    return JobStatus.COMPLETED.value


def running_task_id(job: Job) -> str | None:
    batch = (job.results or {}).get("batch") or {}
    task_id = batch.get("task_id")
    return str(task_id) if task_id and batch.get("stage") == job.status else None


@dataclass
class JobService:
    sessions: async_sessionmaker[AsyncSession]
    cancel_task: CancelTask | None = None
    wake: Callable[[str | None], None] = field(default=lambda _job_id: None)
    clock: Callable[[], datetime] = field(default=utcnow)
    max_in_flight: int | None = None
    """Jobs an owner may have not yet stopped; more → 429."""
    creates_per_minute: float | None = None
    """Creates an owner may make per minute; more → 429."""
    metrics: Metrics = field(default_factory=Metrics)
    reader: AsyncEngine | None = None
    """The pool of the hot reads (`create_read_engine`); the sessions' engine when None."""
    job_reader: JobReader | None = None
    """The job GET's read on the bare driver (`create_job_reader`); the read pool when None."""
    warehouse_dir: Path | None = None
    """Where the layers are written; needed only to serve output."""
    _rates: dict[str, AsyncLimiter] = field(default_factory=dict)

    async def create(
        self, owner: str, new: NewJob, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Create a job; with an idempotency key, replay returns the first job (created=False)."""
        digest = request_hash(new)
        if new.pipeline_id is None:
            pipeline_only_fields(new.params)
        if idempotency_key is not None:
            existing = await self._replay(owner, idempotency_key, digest)
            if existing is not None:
                return existing, False
        await self.charge_create_rate(owner)
        now = self.clock()
        job = Job(
            id=str(uuid.uuid4()), name=new.name, description=new.description, owner=owner,
            status=JobStatus.PENDING.value, suspend=new.suspend,
            params=new.params.model_dump(mode="json"), results={}, conditions=[],
            idempotency_key=idempotency_key, request_hash=digest, created_at=now, updated_at=now,
            pipeline=new.pipeline, pipeline_id=new.pipeline_id,
            pipeline_name=new.pipeline["name"] if new.pipeline else None,
        )
        event = JobEvent(job_id=job.id, event="create", from_status=None,
                         to_status=JobStatus.PENDING.value, attempt=1, message="", at=now)
        try:
            async with transaction(self.sessions) as session:
                await self._check_in_flight(session, owner)
                if new.claim is not None:
                    await new.claim(session, job)
                await store.insert_job(session, job, event)
                await notify(session, job.id)
        except IntegrityError:
            # a concurrent request with the same key won the race: answer as a replay
            if idempotency_key is None:
                raise
            existing = await self._replay(owner, idempotency_key, digest)
            if existing is None:
                raise
            return existing, False
        self.metrics.count_transitions([event])
        self.wake(job.id)
        return job, True

    async def charge_create_rate(self, owner: str) -> None:
        """Take one create from the owner's per-minute rate (dry runs share it), or 429."""
        if self.creates_per_minute is not None:
            limiter = self._rates.setdefault(owner, AsyncLimiter(self.creates_per_minute, 60))
            if not limiter.has_capacity():
                raise TooManyRequests(
                    f"owner {owner!r} may create {self.creates_per_minute:g} jobs per minute",
                    retry_after=max(1, round(60 / self.creates_per_minute)))
            await limiter.acquire()

    async def _check_in_flight(self, session: AsyncSession, owner: str) -> None:
        """429 once the owner has `max_in_flight` jobs not yet stopped.

        Read as the first statement of the create's transaction (no transaction of its own):
        requests racing past the check together may each insert, so under concurrency the limit
        can be exceeded by the creates in flight at that moment, never by more; sequential
        creates see it exactly.
        """
        if self.max_in_flight is not None:
            in_flight = await store.count_in_flight(session, owner, self.max_in_flight)
            if in_flight >= self.max_in_flight:
                raise TooManyRequests(
                    f"owner {owner!r} has {self.max_in_flight} jobs in flight, the limit; wait "
                    "for some to finish", retry_after=5)

    async def _replay(self, owner: str, key: str, digest: str) -> Job | None:
        async with self.sessions() as session:
            existing = await store.find_by_idempotency_key(session, owner, key)
        if existing is not None and existing.request_hash != digest:
            raise IdempotencyConflict(key)
        return existing

    async def get(self, owner: str | None, job_id: str) -> Job:
        async with self.sessions() as session:
            job = await store.get_job(session, job_id, owner)
        if job is None:
            raise JobNotFound(job_id)
        return job

    @property
    def _reader(self) -> AsyncEngine:
        engine = self.reader or self.sessions.kw["bind"]
        assert isinstance(engine, AsyncEngine)
        return engine

    async def read(self, owner: str | None, job_id: str) -> StoredJob | store.JobRow:
        """The job for display only (no ORM object: cheaper, and nothing to save)."""
        if self.job_reader is not None:
            try:
                found = await self.job_reader.read(job_id, owner)
            except ReadUnavailable:
                pass
            else:
                if found is None:
                    raise JobNotFound(job_id)
                return found
        row = await read_retrying(self._reader.connect,
                                  lambda conn: store.read_job(conn, job_id, owner))
        if row is None:
            raise JobNotFound(job_id)
        return row

    async def list_jobs(
        self, owner: str | None, *, status: str | None, name: str | None, limit: int, offset: int,
        pipeline: str | None = None,
    ) -> tuple[int, list[Job]]:
        async with self.sessions() as session:
            return await store.list_jobs(session, owner=owner, status=status, name=name,
                                         limit=limit, offset=offset, pipeline=pipeline)

    async def events(self, owner: str | None, job_id: str) -> list[JobEvent]:
        async with self.sessions() as session:
            if await store.get_job(session, job_id, owner) is None:
                raise JobNotFound(job_id)
            return await store.list_events(session, job_id)

    async def update(self, owner: str | None, job_id: str, changes: dict[str, Any]) -> Job:
        """Rename, describe, and suspend or resume (the latter two through the machine)."""
        now = self.clock()

        def apply(job: Job) -> list[JobEvent]:
            events: list[JobEvent] = []
            if "suspend" in changes and bool(changes["suspend"]) != job.suspend:
                events += self._set_suspend(job, bool(changes["suspend"]), now)
            if "name" in changes:
                job.name = changes["name"]
            if "description" in changes:
                job.description = changes["description"]
            job.updated_at = now
            return events

        job = await change_job(self.sessions, job_id, apply, owner=owner,
                               on_saved=self.metrics.count_transitions)
        self.wake(job.id)
        return job

    def _set_suspend(self, job: Job, suspend: bool, now: datetime) -> list[JobEvent]:
        events = fire(job, "suspend" if suspend else "resume", now)
        job.suspend = suspend
        job.conditions = cond.set_condition(
            job.conditions, cond.SUSPENDED, cond.TRUE if suspend else cond.FALSE,
            "Suspended" if suspend else "Resumed",
            "no new stage starts until the job is resumed" if suspend else "", now)
        return events

    async def act(self, owner: str | None, job_id: str, action: str) -> Job:
        now = self.clock()
        task_to_cancel: list[str] = []

        def apply(job: Job) -> list[JobEvent]:
            task_to_cancel.clear()  # applied again after a concurrent update
            if action in ("suspend", "resume"):
                return self._set_suspend(job, action == "suspend", now)
            if action == "cancel":
                task_id = running_task_id(job)
                events = fire(job, "cancel", now, message="cancelled by request")
                job.ended_at = now
                job.next_run_at = None
                job.conditions = cond.set_condition(job.conditions, cond.CANCELLED, cond.TRUE,
                                                    "Cancelled", "cancelled by request", now)
                if task_id:
                    task_to_cancel.append(task_id)
                return events
            if action == "retry":
                return self._retry(job, now)
            raise IllegalAction(action, job.status)

        job = await change_job(self.sessions, job_id, apply, owner=owner,
                               on_saved=self.metrics.count_transitions)
        for task_id in task_to_cancel:
            await self._cancel_task(task_id)
        self.wake(job.id)
        return job

    def _retry(self, job: Job, now: datetime) -> list[JobEvent]:
        target = resume_point(job)
        events = fire(job, "retry", now, message=f"resuming at {target}", resume_at=target)
        job.attempt += 1
        job.ended_at = None
        job.next_run_at = None
        job.stage_started_at = now
        if job.started_at is not None:
            job.started_at = now  # the job timeout counts from the retry
        job.conditions = [
            c for c in job.conditions
            if c.get("type") not in (cond.FAILED, cond.CANCELLED, target)
        ]
        return events

    async def delete(self, owner: str | None, job_id: str) -> None:
        async with transaction(self.sessions) as session:
            job = await store.get_job(session, job_id, owner)
            if job is None:
                raise JobNotFound(job_id)
            task_id = running_task_id(job)
            if job.status != JobStatus.SUCCEEDED.value:  # an unfinished run's files go back
                await input_store.release(session, job.id)
            await store.delete_job(session, job)
        if task_id:
            await self._cancel_task(task_id)

    async def _cancel_task(self, task_id: str) -> None:
        if self.cancel_task is None:
            return
        try:
            await self.cancel_task(task_id)
        except Exception as exc:  # the job is already stopped; the executor may be down
            log.warning("could not cancel task %s: %s", task_id, exc)

    async def ensure_output(self, owner: str | None, job_id: str) -> None:
        """Refuse to serve output of a job that has not Succeeded."""
        job = await self.get(owner, job_id)
        if job.status != JobStatus.SUCCEEDED.value:
            raise OutputNotReady(job_id, job.status)

    def warehouse(self) -> Path:
        """The warehouse root whose layers this service serves."""
        if self.warehouse_dir is None:
            raise RuntimeError("this JobService has no warehouse_dir to serve layers from")
        return self.warehouse_dir

    async def output(
        self, owner: str | None, job_id: str, fmt: Literal["json", "csv"], limit: int,
        offset: int = 0,
    ) -> Iterator[bytes]:
        """The DS rows of a Succeeded job as JSON or CSV chunks (`app.store.layers.iter_rows`)."""
        path = layout.layer_dir(self.warehouse(), job_id, Stage.DWS_TO_DS.layer)
        await self.ensure_output(owner, job_id)
        return layers.iter_rows(path, fmt, limit, offset)
