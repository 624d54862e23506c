"""The scheduler: turns pipelines' schedule ticks into runs, releases backfills, keeps history.

It runs inside the watcher process, one pass every `interval` seconds (or when woken), with an
injected clock so tests drive it tick by tick. Replicas need no lock: each tick's run is created
in the transaction that inserts its `pipeline_ticks` row, and UNIQUE(pipeline_id, scheduled_for)
lets only one of them commit; the loser's insert conflicts and it moves on. A crash between
deciding a tick and creating its job rolls both back, so the next pass decides it again.

Each pass, for every pipeline whose `next_fire_at` has come:
- the ticks due since then are decided oldest first: with `catchup` every one runs (up to
  `MAX_CATCHUP_PER_PASS` a pass), without it only the latest, the older ones recorded `missed`;
  a tick found more than `starting_deadline_seconds` late is `missed` too;
- a tick to run while a run is active follows `concurrency_policy`: Forbid → `skipped_overlap`,
  Allow → a run beside it, Replace → a run, then the active ones are cancelled;
- a tick whose source matches no landed file → `skipped_no_input` (when `has_input` is given).
Then backfills get runs while fewer than their `max_active` are active, and each pipeline's
finished runs beyond its history limits are deleted, warehouse folders first. Ticks that ran
nothing are forgotten beyond the newest `TICKS_KEPT`; a tick that made a run is kept for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from app.domain import layout
from app.domain.errors import IllegalAction, JobNotFound
from app.domain.inputs import NoNewInput
from app.domain.owners import landing_scope
from app.domain.params import JobParams
from app.domain.pipelines import ParameterProblem, PipelineSpec, render_params, resolve_parameters
from app.domain.schedule import Schedule, next_tick, ticks_after
from app.domain.states import JobStatus
from app.domain.webhooks import EventType
from app.faults import crash_point
from app.services.pipelines import PipelineService, create_tick_run, spec_of
from app.store import pipelines as store
from app.store import webhooks
from app.store.db import transaction
from app.store.models import Pipeline, PipelineTick
from app.store.types import utcnow
from app.watcher.loop import PassLoop

log = logging.getLogger("strata.scheduler")

MAX_CATCHUP_PER_PASS = 50
MAX_MISSED_RECORDED = 10
MAX_TICKS_SCANNED = 100_000
TICKS_KEPT = 100
"""Ticks that ran nothing (missed, skipped) are forgotten beyond a pipeline's newest 100."""
HasInput = Callable[[str, JobParams], bool]
"""(owner, a run's params) → does its source match any landed file?"""


class Scheduler:
    def __init__(
        self,
        pipelines: PipelineService,
        *,
        warehouse_dir: Path,
        interval: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        has_input: HasInput | None = None,
        fault: Callable[[str], None] = crash_point,
        batch_limit: int = 100,
    ) -> None:
        self.sessions = pipelines.sessions
        self.pipelines = pipelines
        self.warehouse_dir = warehouse_dir
        self.interval = interval
        self.clock = clock
        self.has_input = has_input
        self.fault = fault
        self.batch_limit = batch_limit
        self._loop = PassLoop("strata-scheduler")

    def wake(self) -> None:
        self._loop.wake()

    def start(self) -> None:
        self._loop.start(self._run)

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        while not self._loop.stopping.is_set():
            self._loop.begin_pass()
            try:
                await self.run_once()
            except Exception:
                log.exception("scheduler pass failed; trying again")
            await self._loop.sleep(self.interval)

    async def run_once(self) -> None:
        """One pass: due ticks, backfills, history."""
        await self.fire_due()
        await self.release_backfills()
        await self.enforce_history()

    # --- schedule ticks ----------------------------------------------------------------------

    async def fire_due(self) -> int:
        """Decide every due tick; return how many runs this replica created."""
        now = self.clock()
        async with self.sessions() as session:
            due = await store.due_pipelines(session, now, self.batch_limit)
        created = 0
        for pipeline in due:
            try:
                created += await self._fire_pipeline(pipeline, now)
            except Exception:
                log.exception("pipeline %s/%s: deciding its ticks failed", pipeline.owner,
                              pipeline.name)
        if created:
            self.pipelines.jobs.wake(None)
        return created

    async def _fire_pipeline(self, pipeline: Pipeline, now: datetime) -> int:
        spec = spec_of(pipeline)
        schedule, cursor = spec.schedule, pipeline.next_fire_at
        if schedule is None or cursor is None:
            return 0
        runs, missed, following = _due_ticks(schedule, cursor, now)
        created = 0
        for at in missed:
            await self._record(pipeline, at, "missed", now)
        for at in runs:
            late = (now - at).total_seconds()
            deadline = schedule.starting_deadline_seconds
            if deadline is not None and late > deadline:
                await self._record(pipeline, at, "missed", now)
            elif await self._fire(pipeline, spec, at, now) == "created":
                created += 1
        async with transaction(self.sessions) as session:
            await store.move_cursor(session, pipeline.id, following)
            await store.prune_ticks(session, pipeline.id, TICKS_KEPT)
        return created

    async def _record(self, pipeline: Pipeline, at: datetime, outcome: str,
                      now: datetime) -> bool:
        """Record a tick that runs nothing; False when it was decided already.

        A missed tick is reported to the owner's `pipeline.tick_missed` webhooks in the same
        transaction (the outbox), so the message exists exactly when the tick row does.
        """
        try:
            async with transaction(self.sessions) as session:
                await store.insert_tick(session, PipelineTick(
                    pipeline_id=pipeline.id, scheduled_for=at, trigger="schedule",
                    outcome=outcome, decided_at=now))
                if outcome == "missed":
                    await webhooks.enqueue_for_owner(
                        session, pipeline.owner, EventType.PIPELINE_TICK_MISSED.value,
                        {"pipeline": pipeline.name, "version": pipeline.version,
                         "scheduled_for": at, "outcome": outcome},
                        now, pipeline=pipeline.name)
        except IntegrityError:
            return False
        if outcome == "missed":
            log.warning("pipeline %s/%s: tick %s missed", pipeline.owner, pipeline.name, at)
        return True

    async def _fire(self, pipeline: Pipeline, spec: PipelineSpec, at: datetime,
                    now: datetime) -> str | None:
        """Decide one tick; its outcome, or None when another replica decided it."""
        assert spec.schedule is not None
        if self.has_input is not None:
            try:
                params = render_params(spec, resolve_parameters(spec, {}, at))
            except ParameterProblem as exc:
                log.warning("pipeline %s: tick %s cannot run: %s", pipeline.name, at, exc)
                return "missed" if await self._record(pipeline, at, "missed", now) else None
            if not self.has_input(pipeline.owner, params):
                ok = await self._record(pipeline, at, "skipped_no_input", now)
                return "skipped_no_input" if ok else None
        policy = spec.schedule.concurrency_policy
        to_cancel: list[str] = []
        try:
            async with transaction(self.sessions) as session:
                active = await store.active_runs(session, pipeline.id)
                if active and policy == "Forbid":
                    await store.insert_tick(session, PipelineTick(
                        pipeline_id=pipeline.id, scheduled_for=at, trigger="schedule",
                        outcome="skipped_overlap", decided_at=now))
                    return "skipped_overlap"
                job_id = str(uuid.uuid4())
                await store.insert_tick(session, PipelineTick(
                    pipeline_id=pipeline.id, scheduled_for=at, trigger="schedule",
                    outcome="created", job_id=job_id, decided_at=now))
                self.fault("after_tick_decided")
                await create_tick_run(session, pipeline, spec, at, "schedule", now, job_id=job_id,
                                      inputs=self.pipelines.inputs)
                if policy == "Replace":
                    to_cancel = [job.id for job in active]
        except IntegrityError:
            return None  # another replica decided this tick first
        except NoNewInput:  # a new_files run found every matching file taken
            ok = await self._record(pipeline, at, "skipped_no_input", now)
            return "skipped_no_input" if ok else None
        except ParameterProblem as exc:
            log.warning("pipeline %s: tick %s cannot run: %s", pipeline.name, at, exc)
            return "missed" if await self._record(pipeline, at, "missed", now) else None
        for job_id in to_cancel:
            with contextlib.suppress(IllegalAction, JobNotFound):  # it ended meanwhile
                await self.pipelines.jobs.act(pipeline.owner, job_id, "cancel")
        return "created"

    # --- backfills and history -----------------------------------------------------------------

    async def release_backfills(self) -> int:
        async with self.sessions() as session:
            backfills = await store.backfills_with_pending_ticks(session, self.batch_limit)
        started = 0
        for backfill in backfills:
            started += await self.pipelines.release(backfill)
        return started

    async def enforce_history(self) -> int:
        """Delete each pipeline's finished runs beyond its limits: folders first, then rows, so
        a crash in between leaves a row to delete again, never a folder nobody knows about."""
        async with self.sessions() as session:
            counts = await store.finished_run_counts(session)
            doomed: list[str] = []
            for pipeline_id in sorted({pid for pid, _status in counts}):
                pipeline = await store.get_pipeline_by_id(session, pipeline_id)
                if pipeline is None:
                    continue  # a deleted pipeline's runs stay
                history = spec_of(pipeline).history
                kept = {
                    (JobStatus.SUCCEEDED,): history.succeeded,
                    (JobStatus.FAILED, JobStatus.CANCELLED): history.failed,
                }
                for statuses, keep in kept.items():
                    if sum(counts.get((pipeline_id, s.value), 0) for s in statuses) > keep:
                        doomed += await store.finished_runs_beyond(session, pipeline_id,
                                                                   statuses, keep)
        if not doomed:
            return 0
        for job_id in doomed:
            if layout.is_safe_job_id(job_id):
                await asyncio.to_thread(shutil.rmtree, layout.job_dir(self.warehouse_dir, job_id),
                                        True)
        async with transaction(self.sessions) as session:
            deleted = await store.delete_finished_jobs(session, doomed)
        log.info("history limits: deleted %d finished run(s)", deleted)
        return deleted


def _due_ticks(schedule: Schedule, cursor: datetime,
               now: datetime) -> tuple[list[datetime], list[datetime], datetime | None]:
    """(ticks to run, ticks to record missed, the next fire time after these)."""
    since = cursor - timedelta(microseconds=1)
    if schedule.catchup:
        runs: list[datetime] = []
        for at in ticks_after(schedule, since):
            if at > now or len(runs) >= MAX_CATCHUP_PER_PASS:
                break
            runs.append(at)
        following = next_tick(schedule, runs[-1]) if runs else next_tick(schedule, now)
        return runs, [], following
    recent: deque[datetime] = deque(maxlen=MAX_MISSED_RECORDED + 1)
    for scanned, at in enumerate(ticks_after(schedule, since)):
        if at > now:
            break
        if scanned >= MAX_TICKS_SCANNED:  # down for ages: start afresh from now
            return [], [], next_tick(schedule, now)
        recent.append(at)
    latest = [recent.pop()] if recent else []
    return latest, list(recent), next_tick(schedule, now)


def landing_has_input(landing_dir: Path) -> HasInput:
    """Does a run's `source.path` match a landed file in its owner's landing space?"""

    def has_input(owner: str, params: JobParams) -> bool:
        scope = landing_scope(owner)
        root = landing_dir / scope if scope else landing_dir
        try:
            return any(path.is_file() for path in root.glob(params.source.path))
        except (ValueError, OSError):  # a glob Python cannot read: let the engine judge it
            return True

    return has_input
