"""What each state of a job does in a tick: start, run a stage through the executor, finish.

For a stage state: create the stage's task (deterministic idempotency key) if there is none for
this attempt, poll it, record progress, and move on when it completes. A failed task is retried
with backoff up to `retries`, then the job fails with a condition that says why. Every change is
one version-guarded transaction, so a concurrent cancel or another replica never loses an update.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter

from app.batch.client import BatchError, ExecutorUnavailable, TaskNotFound, TaskRejected
from app.batch.manager import BatchManager
from app.contract.tasks import ACTIVE_STATUSES, TaskCreate, TaskPublic, TaskStatus
from app.domain import conditions as cond
from app.domain import layout
from app.domain.errors import ConcurrentUpdate
from app.domain.owners import landing_scope
from app.domain.parameters import TypedValue
from app.domain.params import JobParams
from app.domain.states import RUNNABLE_STATUSES, JobStatus, Stage, stage_of
from app.faults import crash_point
from app.logs import bind
from app.metrics import Metrics
from app.services.inputs import holds_inputs
from app.services.transitions import fire, save
from app.store import jobs as store
from app.store.db import transaction
from app.store.models import Job, JobEvent
from app.store.types import utcnow
from app.tables.runs import TableCommitFailed, commit_tables
from app.watcher.helper import backoff_seconds, params_of, task_key, timeout_reason

log = logging.getLogger("strata.watcher")

MAX_STEPS_PER_TICK = 12
# events after which a stage's automatic retries start counting from zero
RETRY_RESETS = ("create", "start", "stage_done", "retry")


@dataclass
class StageDriver:
    sessions: Any
    batch: BatchManager
    limiter: AsyncLimiter
    warehouse_dir: Path
    retry_backoff: float = 2.0
    clock: Callable[[], datetime] = field(default=utcnow)
    metrics: Metrics = field(default_factory=Metrics)
    queued_poll_seconds: float = 5.0
    single: Any = None
    """Sessions of the autocommit pool, for changes that are one statement; None: none."""
    _queued_seen: dict[str, float] = field(default_factory=dict)
    """Task id → monotonic time of the last poll that found it still queued."""
    _finished: dict[str, TaskPublic] = field(default_factory=dict)
    """Task id → the finished task as the embedded executor handed it over, used once."""
    _fresh: dict[str, TaskPublic] = field(default_factory=dict)
    """Job id → its task as this pass already learned it (the create's answer, a batched poll),
    taken by the job's next poll instead of asking again."""

    @property
    def _postgres(self) -> bool:
        return bool(self.single is not None and self.single.kw["bind"].dialect.name == "postgresql")

    def task_finished(self, task: TaskPublic) -> None:
        """Take a finished task from the executor that ran it, so its job need not poll it.

        A finished task never changes, so this is the answer a poll would get. Only the
        embedded executor hands tasks over; a remote one is polled as before.
        """
        if not task.finished:
            return
        if len(self._finished) > 10_000:  # tasks of jobs advanced elsewhere leave entries
            self._finished.clear()
        self._finished[task.task_id] = task

    async def advance(self, job: Job, *, woken: bool = True) -> Job | None:
        """Take the job as far as it can go now; None when another writer got there first.

        `woken=False` (a periodic pass, not a wake-up for this job) lets a task that was still
        queued in the executor at its last poll go unpolled for `queued_poll_seconds`: under a
        backlog most tasks wait in the queue, and polling each of them every pass was most of
        the watcher's work. A finished task wakes its job, so this delays nothing.
        """
        try:
            return await self._advance(job, woken=woken)
        finally:
            self._fresh.pop(job.id, None)

    async def _advance(self, job: Job, *, woken: bool) -> Job | None:
        try:
            for step in range(MAX_STEPS_PER_TICK):
                before = (job.status, job.attempt)
                job = await self._step(job, may_wait=step == 0 and not woken)
                if (job.status, job.attempt) == before or job.status in (
                    JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SUCCEEDED
                ):
                    return job
                if job.suspend or (job.next_run_at and job.next_run_at > self.clock()):
                    return job
            return job
        except ConcurrentUpdate:
            log.info("job %s changed concurrently; it is picked up again next tick", job.id)
            return None

    async def _step(self, job: Job, *, may_wait: bool = False) -> Job:
        if job.status not in RUNNABLE_STATUSES or job.suspend:
            return job  # changed by a user since it was claimed: nothing to do
        if job.status == JobStatus.PENDING:
            return await self._start(job)
        if job.status == JobStatus.COMPLETED:
            return await self._complete(job)
        stage = stage_of(job.status)
        assert stage is not None, f"job {job.id} is not runnable in {job.status}"
        return await self._run_stage(job, stage, may_wait=may_wait)

    async def _commit(self, job: Job, events: list[JobEvent]) -> Job:
        saved = await self._commit_at_once(job, events)
        if saved is not None:
            return saved
        async with transaction(self.sessions) as session:
            saved = await save(session, job, events)
            if events:
                crash_point("before_transition_commit")
        if events:
            crash_point("after_transition_commit")
            self.metrics.count_transitions(events)
        return saved

    async def _commit_at_once(self, job: Job, events: list[JobEvent]) -> Job | None:
        """The change as one statement on the autocommit pool, where one statement says it
        all: a change without events (a task id, progress) on either backend; with events on
        PostgreSQL, unless the job holds input files (`inputs.on_transition`) or its owner has
        a webhook (`store.save_at_once`). None: not written, save it in a transaction."""
        if self.single is None or (events and (not self._postgres or holds_inputs(job))):
            return None
        if events:
            crash_point("before_transition_commit")
        async with transaction(self.single) as session:
            if not events:
                await store.save_job(session, job, job.version)
            elif not await store.save_at_once(session, job, events):
                return None
        if events:
            crash_point("after_transition_commit")
            self.metrics.count_transitions(events)
        return job

    async def _start(self, job: Job) -> Job:
        now = self.clock()
        events = fire(job, "start", now)
        job.started_at = job.stage_started_at = now
        first = stage_of(job.status)
        if first is None or job.suspend:
            return await self._commit(job, events)
        return await self._commit_with_task(job, events, first, now)

    async def _run_stage(self, job: Job, stage: Stage, *, may_wait: bool = False) -> Job:
        now = self.clock()
        reason = timeout_reason(job, params_of(job), now)
        if reason is not None:
            return await self._fail(job, stage, "Timeout", reason, cancel_task=True)
        batch = dict(job.results.get("batch") or {})
        if not self._has_task(job, batch):
            try:
                task = await self._create_task(job, stage)
            except (TaskRejected, ExecutorUnavailable) as exc:
                return await self._create_failed(job, stage, exc)
            job = self._executor_up(job, now)
            job.results = {**job.results, "batch": self._batch_of(task)}
            job = await self._commit(job, [])
            bind(stage=stage.value, task_id=task.task_id)
            # the create answered with the task's state (a replayed key may even be finished):
            # polling it again at once would only ask the same question twice
            return await self._on_task(job, stage, task)
        task_id = str(job.results["batch"]["task_id"])
        bind(stage=stage.value, task_id=task_id)
        known = self._known_state(job.id, task_id)
        if known is not None:
            task = known
        else:
            if may_wait and self._polled_queued_lately(task_id):
                return job
            try:
                task = await self.batch.get_task_status(task_id)
            except TaskNotFound:
                self.metrics.task_poll_errors.labels("not_found").inc()
                log.warning("job %s: executor lost task %s; creating it again", job.id, task_id)
                job.results = {**job.results, "batch": {**job.results["batch"], "task_id": None}}
                return await self._commit(job, [])
            except ExecutorUnavailable as exc:
                self.metrics.task_poll_errors.labels("unavailable").inc()
                return await self._executor_down(job, exc)
        if task.status is TaskStatus.CREATED:
            if len(self._queued_seen) > 100_000:  # jobs deleted while queued leave entries
                self._queued_seen.clear()
            self._queued_seen[task_id] = time.monotonic()
        else:
            self._queued_seen.pop(task_id, None)
        job = self._executor_up(job, now)
        return await self._on_task(job, stage, task)

    def _known_state(self, job_id: str, task_id: str) -> TaskPublic | None:
        """The task's state without asking the executor: handed over finished, or learned by
        this pass (its create, a batched poll); None: poll it."""
        finished = self._finished.pop(task_id, None)
        fresh = self._fresh.pop(job_id, None)
        if finished is not None:
            return finished
        return fresh if fresh is not None and fresh.task_id == task_id else None

    def _polled_queued_lately(self, task_id: str) -> bool:
        seen = self._queued_seen.get(task_id)
        return seen is not None and time.monotonic() - seen < self.queued_poll_seconds

    def poll_wanted(self, job: Job, *, woken: bool) -> str | None:
        """The task the next advance of `job` would poll, if any: for one batched poll."""
        if job.status not in RUNNABLE_STATUSES or job.suspend or stage_of(job.status) is None:
            return None
        batch = job.results.get("batch") or {}
        if not self._has_task(job, batch):
            return None
        task_id = str(batch["task_id"])
        if task_id in self._finished or (not woken and self._polled_queued_lately(task_id)):
            return None
        return task_id

    async def poll_many(self, tasks: dict[str, str]) -> None:
        """Poll the tasks of many jobs ({job id: task id}) with one request; each job's next
        poll takes the answer. Any error is left to the jobs' own polls, which handle it."""
        try:
            found = {t.task_id: t for t in await self.batch.get_tasks(list(tasks.values()))}
        except BatchError as exc:
            log.info("batched poll of %d task(s) failed (%s); each job polls on its own",
                     len(tasks), exc)
            return
        for job_id, task_id in tasks.items():
            if task_id in found:
                self._fresh[job_id] = found[task_id]

    async def _on_task(self, job: Job, stage: Stage, task: TaskPublic) -> Job:
        if task.status in ACTIVE_STATUSES:
            return await self._record_progress(job, task)
        if task.status is TaskStatus.COMPLETED:
            return await self._stage_done(job, stage, task)
        return await self._task_failed(job, stage, task)

    def _has_task(self, job: Job, batch: dict[str, Any]) -> bool:
        return bool(batch.get("task_id")) and batch.get("stage") == job.status and (
            batch.get("attempt") == job.attempt)

    async def _create_failed(self, job: Job, stage: Stage, exc: Exception) -> Job:
        """A refused create fails the job; an unreachable executor is waited for."""
        if isinstance(exc, TaskRejected):
            self.metrics.task_create_errors.labels("rejected").inc()
            return await self._fail(job, stage, "TaskRejected", str(exc))
        self.metrics.task_create_errors.labels("unavailable").inc()
        return await self._executor_down(job, exc)

    async def _create_task(self, job: Job, stage: Stage) -> TaskPublic:
        task = await self._send_create(job, stage)
        self.metrics.tasks_created.labels(stage.value).inc()
        crash_point("after_task_create")
        return task

    async def _send_create(self, job: Job, stage: Stage) -> TaskPublic:
        async with self.limiter:
            task = TaskCreate(
                job_id=job.id, stage=stage, attempt=job.attempt,
                idempotency_key=task_key(job.id, stage.value, job.attempt),
                params=JobParams.model_validate(job.params), landing_scope=landing_scope(job.owner),
            )
            parameters = (job.pipeline or {}).get("parameters")
            if parameters:  # set only for pipeline runs, so one-off tasks stay as they were
                task.parameters = {k: TypedValue.model_validate(v) for k, v in parameters.items()}
            return await self.batch.create_task(task)

    @staticmethod
    def _batch_of(task: TaskPublic) -> dict[str, Any]:
        result = task.result or {}
        return {
            "task_id": task.task_id, "stage": task.stage, "attempt": task.attempt,
            "status": task.status, "percent": round(task.progress, 2),
            "processed": task.processed, "total": task.total,
            "result_path": result.get("path"),
        }

    async def _record_progress(self, job: Job, task: TaskPublic) -> Job:
        batch = self._batch_of(task)
        if batch == job.results.get("batch"):
            return job
        job.results = {**job.results, "batch": batch}
        return await self._commit(job, [])

    async def _stage_done(self, job: Job, stage: Stage, task: TaskPublic) -> Job:
        now = self.clock()
        result = dict(task.result or {})
        layer = {
            "rows": result.get("rows", 0), "rejects": result.get("rejects", 0),
            "deduped": result.get("deduped", 0), "path": result.get("path"),
            "rejects_path": result.get("rejects_path"), "seconds": result.get("seconds"),
            "task_id": task.task_id,
        }
        layers = {**job.results.get("layers", {}), stage.layer: layer}
        message = f"{stage.layer}: {layer['rows']} rows"
        if layer["rejects"]:
            message += f", {layer['rejects']} rejects"
        warnings = self._warnings(job, result, now)
        events = warnings + fire(job, "stage_done", now, message=message)
        self.metrics.stage_seconds.labels(stage.value).observe(
            max((now - task.created_at).total_seconds(), 0.0))
        self.metrics.rows_processed.labels(stage.layer).inc(int(layer["rows"] or 0))
        job.results = {**job.results, "layers": layers, "batch": self._batch_of(task)}
        job.conditions = cond.set_condition(job.conditions, stage.value, cond.TRUE, "Done",
                                            message, now)
        job.attempt = 1
        job.stage_started_at = now
        job.next_run_at = None
        following = stage_of(job.status)
        if following is None and job.status == JobStatus.COMPLETED and not job.suspend:
            # the last stage: the job ends in the same transaction
            return await self._commit(job, events + await self._completion(job, now))
        if following is None or job.suspend or timeout_reason(job, params_of(job), now):
            return await self._commit(job, events)
        return await self._commit_with_task(job, events, following, now)

    async def _commit_with_task(
        self, job: Job, events: list[JobEvent], stage: Stage, now: datetime
    ) -> Job:
        """Commit a transition into `stage` together with the id of that stage's new task.

        The task is created before the transition commits: one transaction per hop instead of
        two, and the stage starts without waiting for a commit. A crash in between re-sends the
        same idempotency key, so the executor answers with the task it already has.
        """
        try:
            created = await self._create_task(job, stage)
        except (TaskRejected, ExecutorUnavailable) as exc:
            return await self._create_failed(await self._commit(job, events), stage, exc)
        job = self._executor_up(job, now)
        job.results = {**job.results, "batch": self._batch_of(created)}
        try:
            job = await self._commit(job, events)
        except ConcurrentUpdate:
            await self._drop_if_stopped(job.id, created)
            raise
        bind(stage=stage.value, task_id=created.task_id)
        self._fresh[job.id] = created
        return job

    @staticmethod
    def _warnings(job: Job, result: dict[str, Any], now: datetime) -> list[JobEvent]:
        """A gate's warnings (e.g. SchemaDrift with on_drift: warn): a condition and an event."""
        events = []
        for warning in result.get("warnings") or []:
            reason, text = str(warning.get("reason")), str(warning.get("message", ""))
            job.conditions = cond.set_condition(job.conditions, reason, cond.TRUE, reason, text,
                                                now)
            events.append(JobEvent(job_id=job.id, event="warning", from_status=job.status,
                                   to_status=job.status, attempt=job.attempt,
                                   message=text[:4000], at=now))
        return events

    async def _task_failed(self, job: Job, stage: Stage, task: TaskPublic) -> Job:
        error = task.error or f"task ended {task.status}"
        if not task.retryable:  # a gate, no memory, no disk: another attempt fails the same way
            return await self._fail(job, stage, task.reason or "StageFailed",
                                    f"{stage.value} failed: {error}")
        async with self.sessions() as session:
            earlier = await store.count_events_since_last(session, job.id, "retry_stage",
                                                          RETRY_RESETS)
        retries = params_of(job).retries
        if earlier >= retries:
            return await self._fail(job, stage, "StageFailed",
                                    f"{stage.value} failed after {earlier + 1} attempt(s): {error}")
        now = self.clock()
        delay = backoff_seconds(earlier + 1, self.retry_backoff)
        events = fire(job, "retry_stage", now, message=error)
        job.attempt += 1
        job.next_run_at = now + timedelta(seconds=delay)
        job.conditions = cond.set_condition(
            job.conditions, stage.value, cond.FALSE, "Retrying",
            f"attempt {job.attempt - 1} failed: {error}; retry {earlier + 1} of {retries} "
            f"in {delay:.1f}s", now)
        return await self._commit(job, events)

    async def _fail(
        self, job: Job, stage: Stage | None, reason: str, message: str, *, cancel_task: bool = False
    ) -> Job:
        now = self.clock()
        if cancel_task:
            await self._cancel_running_task(job)
        return await self._commit(job, self._failure(job, stage, reason, message, now))

    @staticmethod
    def _failure(
        job: Job, stage: Stage | None, reason: str, message: str, now: datetime
    ) -> list[JobEvent]:
        events = fire(job, "fail", now, message=message)
        if stage is not None:
            job.conditions = cond.set_condition(job.conditions, stage.value, cond.FALSE, reason,
                                                message, now)
        job.conditions = cond.set_condition(job.conditions, cond.FAILED, cond.TRUE, reason,
                                            message, now)
        job.ended_at = now
        job.next_run_at = None
        return events

    async def _cancel_running_task(self, job: Job) -> None:
        task_id = (job.results.get("batch") or {}).get("task_id")
        if task_id:
            await self._cancel_quietly(job.id, str(task_id))

    async def _cancel_quietly(self, job_id: str, task_id: str) -> None:
        try:
            await self.batch.cancel_task(task_id)
        except Exception as exc:
            log.warning("job %s: could not cancel task %s: %s", job_id, task_id, exc)

    async def _drop_if_stopped(self, job_id: str, task: TaskPublic) -> None:
        """The job changed while its next stage's task was being created. If a user stopped or
        deleted it, nothing will ever look at that task: cancel it rather than let it run
        unseen. Any other change leaves it, and the next advance replays its key and takes it."""
        async with self.sessions() as session:
            current = await store.get_job(session, job_id, None)
        if current is not None and current.status in RUNNABLE_STATUSES:
            return
        await self._cancel_quietly(job_id, task.task_id)

    async def _executor_down(self, job: Job, exc: Exception) -> Job:
        now = self.clock()
        current = cond.get_condition(job.conditions, cond.EXECUTOR_REACHABLE)
        message = f"executor unavailable, waiting: {exc}"
        if current and current.get("status") == cond.FALSE and current.get("message") == message:
            return job
        job.conditions = cond.set_condition(job.conditions, cond.EXECUTOR_REACHABLE, cond.FALSE,
                                            "ExecutorUnavailable", message, now)
        return await self._commit(job, [])

    def _executor_up(self, job: Job, now: datetime) -> Job:
        current = cond.get_condition(job.conditions, cond.EXECUTOR_REACHABLE)
        if current and current.get("status") == cond.FALSE:
            job.conditions = cond.set_condition(job.conditions, cond.EXECUTOR_REACHABLE, cond.TRUE,
                                                "ExecutorAvailable", "", now)
        return job

    async def _complete(self, job: Job) -> Job:
        return await self._commit(job, await self._completion(job, self.clock()))

    async def _completion(self, job: Job, now: datetime) -> list[JobEvent]:
        """End a Completed job: Succeeded once its output is there, else Failed."""
        layers = job.results.get("layers", {})
        missing = [s.layer for s in Stage if s.layer not in layers]
        ds_dir = layout.layer_dir(self.warehouse_dir, job.id, Stage.DWS_TO_DS.layer)
        if missing or not ds_dir.is_dir():
            what = ", ".join(missing) if missing else f"the DS folder {job.id}/ds"
            return self._failure(job, None, "OutputMissing", f"missing output: {what}", now)
        try:
            tables = await commit_tables(self.warehouse_dir, job)
        except TableCommitFailed as exc:
            return self._failure(job, None, "TableCommitFailed", str(exc), now)
        if tables:  # the rows are in the pipeline's tables before the run is Succeeded
            job.results = {**job.results, "tables": tables}
            now = self.clock()  # the run ends when its commit does: ended_at includes it
        ds = layers[Stage.DWS_TO_DS.layer]
        events = fire(job, "succeed", now, message=f"ds: {ds.get('rows', 0)} rows")
        job.results = {**job.results, "output": {"rows": ds.get("rows", 0), "format": "parquet",
                                                 "url": f"/v1/jobs/{job.id}/output"}}
        job.conditions = cond.set_condition(job.conditions, cond.SUCCEEDED, cond.TRUE,
                                            "Succeeded", "all layers written", now)
        job.ended_at = now
        return events
