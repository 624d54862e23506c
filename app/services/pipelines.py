"""The pipeline resource's use cases: apply a version, read, suspend, run, backfill; and the
runs a tick makes, which the scheduler and backfills share.

A tick's run is created in the transaction that writes its `pipeline_ticks` row, whose
UNIQUE(pipeline_id, scheduled_for) lets only one writer ever make a job for that tick.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain.inputs import NoNewInput
from app.domain.parameters import TypedValue
from app.domain.params import JobParams
from app.domain.pipelines import (
    BackfillNotFound,
    BackfillRefused,
    ParameterProblem,
    PipelineNotFound,
    PipelineSpec,
    Trigger,
    render_params,
    resolve_parameters,
    to_json,
)
from app.domain.schedule import next_tick, ticks_between
from app.domain.states import JobStatus
from app.services.inputs import InputClaimer
from app.services.jobs import JobService, NewJob
from app.store import jobs as job_store
from app.store import pipelines as store
from app.store.db import transaction
from app.store.models import (
    Job,
    JobEvent,
    Pipeline,
    PipelineBackfill,
    PipelineTick,
    PipelineVersion,
)
from app.store.notify import notify
from app.store.types import utcnow

log = logging.getLogger("strata.pipelines")

LAST_TICKS = 10
MAX_BACKFILL_TICKS = 1000
# a tick that ran no job may still be backfilled
RETAKEABLE = ("missed", "skipped_overlap", "skipped_no_input")


@dataclass(frozen=True)
class PipelineView:
    pipeline: Pipeline
    spec: PipelineSpec
    ticks: list[PipelineTick]


@dataclass(frozen=True)
class BackfillView:
    backfill: PipelineBackfill
    taken: list[datetime]
    """The ticks this backfill took (all of its ticks when read back)."""
    runs: list[tuple[PipelineTick, str | None]]
    """Each tick of the backfill and its job's status (None: not started yet)."""


def spec_of(pipeline: Pipeline) -> PipelineSpec:
    return PipelineSpec.model_validate(pipeline.spec)


def first_fire(spec: PipelineSpec, now: datetime) -> datetime | None:
    return next_tick(spec.schedule, now) if spec.schedule is not None else None


def run_record(pipeline: Pipeline, trigger: Trigger, scheduled_for: datetime | None,
               values: dict[str, Any]) -> dict[str, Any]:
    at = scheduled_for.isoformat().replace("+00:00", "Z") if scheduled_for else None
    return {"name": pipeline.name, "version": pipeline.version, "trigger": trigger,
            "scheduled_for": at, "parameters": values}


async def create_tick_run(
    session: AsyncSession, pipeline: Pipeline, spec: PipelineSpec, scheduled_for: datetime,
    trigger: Trigger, now: datetime, job_id: str | None = None,
    inputs: InputClaimer | None = None,
) -> Job:
    """Insert the run of one tick (in the caller's transaction, beside its tick row).

    A `new_files` run claims its files first: NoNewInput when there are none (nothing written)."""
    values = resolve_parameters(spec, {}, scheduled_for)
    params = render_params(spec, values)
    job = Job(
        id=job_id or str(uuid.uuid4()), name=pipeline.name, description=spec.description,
        owner=pipeline.owner, status=JobStatus.PENDING.value, suspend=False,
        params=params.model_dump(mode="json"), results={}, conditions=[],
        created_at=now, updated_at=now,
        pipeline=run_record(pipeline, trigger, scheduled_for, to_json(values)),
        pipeline_id=pipeline.id, pipeline_name=pipeline.name,
    )
    event = JobEvent(job_id=job.id, event="create", from_status=None,
                     to_status=JobStatus.PENDING.value, attempt=1, at=now,
                     message=f"{trigger} run of {pipeline.name} v{pipeline.version} for "
                             f"{run_record(pipeline, trigger, scheduled_for, {})['scheduled_for']}")
    if params.source.mode == "new_files":
        await claimer(inputs).claim_for(session, job, pipeline.id)
    await job_store.insert_job(session, job, event)
    await notify(session, job.id)
    return job


def claimer(inputs: InputClaimer | None) -> InputClaimer:
    if inputs is None:
        raise RuntimeError("a new_files run needs the service's landing directory (inputs=)")
    return inputs


@dataclass
class PipelineService:
    sessions: async_sessionmaker[AsyncSession]
    jobs: JobService
    clock: Callable[[], datetime] = field(default=utcnow)
    inputs: InputClaimer | None = None
    """Claims the files of `new_files` runs; required for them."""

    # --- the resource ------------------------------------------------------------------------

    async def apply(self, owner: str, name: str, spec: PipelineSpec) -> tuple[PipelineView, bool]:
        """Create (True) or replace the pipeline; the same spec again changes nothing."""
        for attempt in range(3):
            try:
                return await self._apply(owner, name, spec)
            except IntegrityError:  # a concurrent PUT of the same name or version won
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _apply(self, owner: str, name: str, spec: PipelineSpec) -> tuple[PipelineView, bool]:
        now, digest, body = self.clock(), spec.digest(), spec.model_dump(mode="json")
        suspend = spec.schedule.suspend if spec.schedule is not None else False
        async with transaction(self.sessions) as session:
            pipeline = await store.get_pipeline(session, owner, name)
            created = pipeline is None
            if pipeline is None:
                pipeline = Pipeline(id=str(uuid.uuid4()), owner=owner, name=name, version=1,
                                    spec=body, spec_hash=digest, suspend=suspend,
                                    next_fire_at=first_fire(spec, now), created_at=now,
                                    updated_at=now)
                session.add(pipeline)
            elif pipeline.spec_hash != digest:
                old = spec_of(pipeline).schedule
                if (old is None or spec.schedule is None or old.timing() != spec.schedule.timing()
                        or (pipeline.suspend and not suspend)):  # resumed: fire from now on
                    pipeline.next_fire_at = first_fire(spec, now)
                pipeline.version += 1
                pipeline.spec, pipeline.spec_hash = body, digest
                pipeline.suspend = suspend
                pipeline.updated_at = now
            else:
                return PipelineView(pipeline, spec, await store.last_ticks(
                    session, pipeline.id, LAST_TICKS)), False
            await session.flush()
            await store.add_version(session, PipelineVersion(
                pipeline_id=pipeline.id, version=pipeline.version, spec=body, spec_hash=digest,
                created_at=now))
            ticks = await store.last_ticks(session, pipeline.id, LAST_TICKS)
        return PipelineView(pipeline, spec, ticks), created

    async def _load(self, session: AsyncSession, owner: str, name: str) -> Pipeline:
        pipeline = await store.get_pipeline(session, owner, name)
        if pipeline is None:
            raise PipelineNotFound(name)
        return pipeline

    async def get(self, owner: str, name: str) -> PipelineView:
        async with self.sessions() as session:
            pipeline = await self._load(session, owner, name)
            ticks = await store.last_ticks(session, pipeline.id, LAST_TICKS)
        return PipelineView(pipeline, spec_of(pipeline), ticks)

    async def list_pipelines(self, owner: str, *, limit: int,
                             offset: int) -> tuple[int, list[PipelineView]]:
        async with self.sessions() as session:
            total, rows = await store.list_pipelines(session, owner, limit=limit, offset=offset)
            views = [PipelineView(p, spec_of(p), await store.last_ticks(session, p.id, LAST_TICKS))
                     for p in rows]
        return total, views

    async def versions(self, owner: str, name: str) -> tuple[Pipeline, list[PipelineVersion]]:
        async with self.sessions() as session:
            pipeline = await self._load(session, owner, name)
            return pipeline, await store.list_versions(session, pipeline.id)

    async def delete(self, owner: str, name: str) -> None:
        async with transaction(self.sessions) as session:
            pipeline = await self._load(session, owner, name)
            await store.delete_pipeline(session, pipeline.id)

    async def set_suspend(self, owner: str, name: str, suspend: bool) -> PipelineView:
        """Pause or resume the schedule; a resumed schedule fires from now on (the ticks while
        it was paused are not run)."""
        now = self.clock()
        async with transaction(self.sessions) as session:
            pipeline = await self._load(session, owner, name)
            spec = spec_of(pipeline)
            if pipeline.suspend != suspend:
                pipeline.suspend = suspend
                if not suspend:
                    pipeline.next_fire_at = first_fire(spec, now)
                pipeline.updated_at = now
            ticks = await store.last_ticks(session, pipeline.id, LAST_TICKS)
        return PipelineView(pipeline, spec, ticks)

    # --- runs --------------------------------------------------------------------------------

    async def run(self, owner: str, name: str, given: dict[str, Any],
                  idempotency_key: str | None = None) -> tuple[Job, bool]:
        """A manual run: `run_time` is now; an Idempotency-Key guards (name, parameters)."""
        pipeline, params, values = await self._manual_run(owner, name, given)
        new = NewJob(
            name=pipeline.name, description=spec_of(pipeline).description, params=params,
            pipeline=run_record(pipeline, "manual", None, to_json(values)),
            pipeline_id=pipeline.id,
            request_body={"pipeline": pipeline.name, "parameters": given},
            claim=(partial(claimer(self.inputs).claim_for, pipeline_id=pipeline.id)
                   if params.source.mode == "new_files" else None),
        )
        return await self.jobs.create(owner, new, idempotency_key)

    async def plan_run(self, owner: str, name: str, given: dict[str, Any]
                       ) -> tuple[JobParams, dict[str, TypedValue]]:
        """What a manual run would run, checked as `run` checks it, creating nothing (dry runs)."""
        _, params, values = await self._manual_run(owner, name, given)
        return params, values

    async def _manual_run(self, owner: str, name: str, given: dict[str, Any]
                          ) -> tuple[Pipeline, JobParams, dict[str, TypedValue]]:
        async with self.sessions() as session:
            pipeline = await self._load(session, owner, name)
        spec = spec_of(pipeline)
        values = resolve_parameters(spec, given, self.clock())
        return pipeline, render_params(spec, values), values

    # --- backfills ---------------------------------------------------------------------------

    async def backfill(self, owner: str, name: str, start: datetime, end: datetime,
                       max_active: int) -> BackfillView:
        """One run per tick in [start, end] that has none yet; at most `max_active` at once."""
        now = self.clock()
        async with self.sessions() as session:
            pipeline = await self._load(session, owner, name)
        spec = spec_of(pipeline)
        if spec.schedule is None:
            raise BackfillRefused("schedule", f"pipeline {name!r} has no schedule to backfill")
        if end < start:
            raise BackfillRefused("end", "end is before start")
        ticks = ticks_between(spec.schedule, start, end, limit=MAX_BACKFILL_TICKS + 1)
        if len(ticks) > MAX_BACKFILL_TICKS:
            raise BackfillRefused("end", f"the range holds more than {MAX_BACKFILL_TICKS} ticks")
        backfill = PipelineBackfill(id=str(uuid.uuid4()), pipeline_id=pipeline.id, start=start,
                                    end=end, max_active=max_active, created_at=now)
        async with transaction(self.sessions) as session:
            await store.add_backfill(session, backfill)
        taken = [at for at in ticks if await self._take_for_backfill(pipeline.id, backfill, at)]
        await self.release(backfill)
        return await self._backfill_view(backfill, taken)

    async def _take_for_backfill(self, pipeline_id: str, backfill: PipelineBackfill,
                                 at: datetime) -> bool:
        now = self.clock()
        claim: dict[str, Any] = {"outcome": "pending", "trigger": "backfill",
                                 "backfill_id": backfill.id, "decided_at": now}
        try:
            async with transaction(self.sessions) as session:
                existing = await store.get_tick(session, pipeline_id, at)
                if existing is None:
                    await store.insert_tick(session, PipelineTick(
                        pipeline_id=pipeline_id, scheduled_for=at, **claim))
                    return True
                assert existing.id is not None
                return await store.take_tick(session, existing.id, expected=RETAKEABLE,
                                             values=claim)
        except IntegrityError:  # the scheduler decided this tick meanwhile
            return False

    async def release(self, backfill: PipelineBackfill) -> int:
        """Start the backfill's waiting ticks while fewer than `max_active` of its runs are
        active; each exactly once, since a tick is taken by a conditional update."""
        now = self.clock()
        started = 0
        async with transaction(self.sessions) as session:
            pipeline = await store.get_pipeline_by_id(session, backfill.pipeline_id)
            if pipeline is None:
                return 0
            spec = spec_of(pipeline)
            ticks = await store.backfill_ticks(session, backfill.id)
            running = await store.count_active_jobs(session, [t.job_id for t in ticks if t.job_id])
            waiting = [t for t in ticks if t.outcome == "pending"]
            for tick in waiting[:max(backfill.max_active - running, 0)]:
                assert tick.id is not None
                job_id = str(uuid.uuid4())
                if not await store.take_tick(session, tick.id, expected=("pending",), values={
                        "outcome": "created", "job_id": job_id, "decided_at": now}):
                    continue
                try:
                    await create_tick_run(session, pipeline, spec, tick.scheduled_for,
                                          "backfill", now, job_id=job_id, inputs=self.inputs)
                except NoNewInput:
                    await store.take_tick(session, tick.id, expected=("created",),
                                          values={"outcome": "skipped_no_input", "job_id": None})
                    continue
                except ParameterProblem as exc:
                    log.warning("backfill %s: tick %s cannot run: %s", backfill.id,
                                tick.scheduled_for, exc)
                    await store.take_tick(session, tick.id, expected=("created",),
                                          values={"outcome": "missed", "job_id": None})
                    continue
                started += 1
        if started:
            self.jobs.wake(None)
        return started

    async def get_backfill(self, owner: str, name: str, backfill_id: str) -> BackfillView:
        async with self.sessions() as session:
            pipeline = await self._load(session, owner, name)
            backfill = await store.get_backfill(session, pipeline.id, backfill_id)
        if backfill is None:
            raise BackfillNotFound(backfill_id)
        return await self._backfill_view(backfill, None)

    async def _backfill_view(self, backfill: PipelineBackfill,
                             taken: list[datetime] | None) -> BackfillView:
        async with self.sessions() as session:
            ticks = await store.backfill_ticks(session, backfill.id)
            statuses = await store.job_statuses(session, [t.job_id for t in ticks if t.job_id])
        runs = [(t, statuses.get(t.job_id) if t.job_id else None) for t in ticks]
        return BackfillView(backfill, [t.scheduled_for for t in ticks] if taken is None else taken,
                            runs)
