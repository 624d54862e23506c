"""Run executor tasks: a bounded pool of engine threads, leases, progress, cancel and recovery.

A task is run only after this runner *claims* it (an atomic UPDATE in `TaskStore.claim`), and it
is held by a lease that a side loop renews every `lease_seconds / 3`. When a process dies its
leases lapse; the sweep of any runner sharing the database then finds the orphaned tasks and runs
them again from their inputs (engines replace a layer, never append to it). A finished task —
completed, failed or cancelled — is never claimed, so never run again.

Engines are blocking code: each stage runs in a worker thread, never on the event loop, with a
`CancelToken` the runner trips on cancel, on shutdown, or when the task turns out to be no longer
ours (cancelled through another replica, or taken over after a lapsed lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.contract.tasks import TaskPublic, TaskStatus
from app.domain import layout
from app.domain.parameters import TypedValue, bind_values
from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.engine.base import (
    CancelToken,
    Engine,
    LayerResult,
    Progress,
    StageCancelled,
    StageFailed,
    StageRequest,
)
from app.executor.gates import Verdict, evaluate
from app.executor.schemas import task_public
from app.executor.tasks import TaskStore
from app.logs import bind
from app.store.models import ExecutorTask
from app.store.types import utcnow

log = logging.getLogger("strata.executor")


def new_runner_id() -> str:
    """Unique per process (and per runner): host, pid and a random suffix."""
    host = socket.gethostname()[:60]
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class StopReason(StrEnum):
    """Why the runner tripped a task's cancel token; decides what is written afterwards."""

    CANCELLED = "cancelled"  # DELETE /v1/tasks/{id}: the row already says cancelled
    LOST = "lost"  # the row is no longer ours: cancelled elsewhere or taken over
    SHUTDOWN = "shutdown"  # this process stops: leave the task for another runner


@dataclass
class _Run:
    """One task being run here; `progress` is written by the engine thread, read by the loop."""

    task_id: str
    token: CancelToken
    job_id: str = ""
    progress: Progress | None = None
    flushed: Progress | None = None
    reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.token.cancel()

    def report(self, progress: Progress) -> None:
        percent = min(max(float(progress.percent), 0.0), 100.0)
        self.progress = Progress(percent, int(progress.processed), int(progress.total))


class TaskRunner:
    def __init__(
        self,
        store: TaskStore,
        engine: Engine,
        *,
        landing_dir: Path,
        warehouse_dir: Path,
        workers: int = 2,
        memory_limit: str | None = None,
        lease_seconds: float = 30.0,
        flush_interval: float = 0.5,
        sweep_interval: float = 3.0,
        runner_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.store = store
        self.engine = engine
        self.landing_dir = Path(landing_dir).resolve()
        self.warehouse_dir = Path(warehouse_dir).resolve()
        self.workers = workers
        self.memory_limit = memory_limit
        self.lease_seconds = lease_seconds
        self.flush_interval = flush_interval
        self.sweep_interval = sweep_interval
        self.runner_id = (runner_id or new_runner_id())[:100]
        self.clock = clock
        self._runs: dict[str, asyncio.Task[None]] = {}  # every task this runner handles now
        self._waiting: set[str] = set()  # … of which waiting for a worker
        self._active: dict[str, _Run] = {}  # … of which claimed and running
        self._sync_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._stopping = asyncio.Event()
        self._sweep_now = asyncio.Event()
        self.on_finished: Callable[[TaskPublic], None] | None = None
        """Called with the task when its end is recorded: the embedded watcher takes it as it
        is, so it need not poll it."""
        self._sync_done = asyncio.Event()

    # --- what the API and metrics see --------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._sync_task is not None and not self._stopping.is_set()

    @property
    def queue_depth(self) -> int:
        """Tasks accepted here and not running yet (waiting for a worker, or being claimed)."""
        return len(self._runs) - len(self._active)

    @property
    def running(self) -> int:
        """Stages running now in this runner's threads."""
        return len(self._active)

    def live_progress(self, task_id: str) -> Progress | None:
        """The latest progress of a task running here (fresher than the database's copy)."""
        run = self._active.get(task_id)
        return run.progress if run is not None else None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the pool and the side loops; the first sweep at once recovers orphaned tasks."""
        if self._sync_task is not None:
            return
        self._stopping = asyncio.Event()
        self._sweep_now = asyncio.Event()
        self._sync_done = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="strata-stage")
        self._sync_task = asyncio.create_task(self._sync_loop(), name="strata-executor-sync")
        self._sweep_task = asyncio.create_task(self._sweep_loop(), name="strata-executor-sweep")
        log.info("executor runner %s started: %d worker(s), lease %.1fs",
                 self.runner_id, self.workers, self.lease_seconds)

    async def stop(self, grace: float = 10.0, hard_timeout: float = 5.0) -> None:
        """Stop accepting work; let running stages finish for `grace` seconds, then cancel them.

        Tasks stopped this way are released unfinished, so another (or the restarted) executor
        runs them again. An engine that ignores its cancel token for `hard_timeout` more seconds is
        abandoned: its thread is left to end on its own and nothing it returns is recorded.
        """
        if self._sync_task is None:
            return
        self._stopping.set()
        self._sweep_now.set()  # the sweep loop sees `_stopping` and ends
        if self._sweep_task is not None:
            await _cancel_and_wait(self._sweep_task, after=hard_timeout)
            self._sweep_task = None
        for task_id in list(self._waiting):  # queued, not claimed: they hold nothing
            self._runs[task_id].cancel()
        pending = set(self._runs.values())
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(grace, 0.0))
        if pending:
            log.info("stopping: cancelling %d running stage(s)", len(self._active))
            for run in list(self._active.values()):
                run.stop(StopReason.SHUTDOWN)
            _, pending = await asyncio.wait(pending, timeout=hard_timeout)
        if pending:
            abandoned = list(self._active)
            log.warning("stopping: %d engine(s) ignored cancellation; abandoning %s",
                        len(pending), ", ".join(abandoned))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            with _logged("release abandoned tasks"):
                await self.store.release(abandoned, self.runner_id)
        self._sync_done.set()  # no run left: the last round flushes, then the loop ends
        await _cancel_and_wait(self._sync_task, after=hard_timeout)
        self._sync_task = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        log.info("executor runner %s stopped", self.runner_id)

    # --- accepting and cancelling ------------------------------------------------------------

    def submit(self, task_id: str) -> None:
        """Queue a task to run here. Not started or stopping: the task waits in the database for
        the sweep of whichever runner is up."""
        if not self.started or task_id in self._runs:
            return
        self._waiting.add(task_id)
        run = asyncio.create_task(self._run(task_id), name=f"strata-task-{task_id}")
        self._runs[task_id] = run

    async def reserve(self) -> bool:
        """Take a free worker for a task about to be created claimed by this runner (the create
        then needs no claim of its own); False when none is free. Hand it to `run_claimed`, or
        give it back with `unreserve`."""
        if not self.started or self._slots is None or self._slots.locked():
            return False
        await self._slots.acquire()  # free: returns at once
        return True

    def unreserve(self) -> None:
        assert self._slots is not None
        self._slots.release()
        self._sweep_now.set()

    def run_claimed(self, task: ExecutorTask) -> None:
        """Run a task inserted already claimed by this runner, on the worker `reserve` took."""
        self._runs[task.id] = asyncio.create_task(self._run_reserved(task),
                                                  name=f"strata-task-{task.id}")

    async def _run_reserved(self, task: ExecutorTask) -> None:
        try:
            if self._pool is None:  # stopped while the insert ran: leave it to another runner
                await self.store.release([task.id], self.runner_id)
                return
            await self._run_held(task)
        except Exception:
            log.exception("task %s: runner error; it will be recovered", task.id)
        finally:
            self._runs.pop(task.id, None)
            self.unreserve()

    async def cancel(self, task_id: str) -> ExecutorTask | None:
        """Mark the task cancelled, then interrupt its engine if it runs here.

        The row is written first, so whatever the engine does next cannot turn it completed or
        failed. A task running on another replica is stopped by that replica's next sync.
        """
        task = await self.store.cancel(task_id, self.clock())
        run = self._active.get(task_id)
        if task is not None and run is not None and task.status == TaskStatus.CANCELLED:
            run.stop(StopReason.CANCELLED)
        return task

    # --- running one task --------------------------------------------------------------------

    async def _run(self, task_id: str) -> None:
        assert self._slots is not None
        try:
            async with self._slots:
                self._waiting.discard(task_id)
                if self._stopping.is_set():
                    return
                task = await self.store.claim(task_id, self.runner_id, self.lease_seconds,
                                              self.clock())
                if task is None:  # finished, cancelled, or another runner has it
                    return
                await self._run_held(task)
        except Exception:
            # the database failed us mid-way; the lease lapses and a sweep runs the task again
            log.exception("task %s: runner error; it will be recovered", task_id)
        finally:
            self._waiting.discard(task_id)
            self._runs.pop(task_id, None)
            self._sweep_now.set()

    async def _run_held(self, task: ExecutorTask) -> None:
        """Run a task this runner has claimed, on a worker it holds."""
        run = _Run(task.id, CancelToken(), job_id=task.job_id)
        self._active[task.id] = run
        if self._stopping.is_set():  # claimed while stopping: hand it straight back
            run.stop(StopReason.SHUTDOWN)
        try:
            await self._execute(task, run)
        finally:
            del self._active[task.id]

    async def _execute(self, task: ExecutorTask, run: _Run) -> None:
        bind(job_id=task.job_id, stage=task.stage, task_id=task.id)
        try:
            request = self._request_of(task)
        except ValueError as exc:
            await self._ended(run, TaskStatus.FAILED, error=f"invalid task: {exc}")
            return
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        log.info("task %s: running %s of job %s (attempt %d)",
                 task.id, task.stage, task.job_id, task.attempt)
        try:
            result, verdict = await loop.run_in_executor(self._pool, self._call_engine, request,
                                                         run)
        except StageCancelled:
            await self._ended(run, TaskStatus.CANCELLED)
        except StageFailed as exc:
            reason = getattr(exc, "reason", None)  # not worth retrying: recorded for the watcher
            failure = {"reason": str(reason), "retryable": False} if reason else None
            await self._ended(run, TaskStatus.FAILED, error=str(exc) or type(exc).__name__,
                              failure=failure)
        except Exception as exc:
            log.error("task %s: engine %s raised", task.id, self.engine.name, exc_info=exc)
            await self._ended(run, TaskStatus.FAILED,
                              error=f"internal engine error: {type(exc).__name__}: {exc}")
        else:
            if verdict.failed:
                await self._ended(run, TaskStatus.FAILED, result=result, verdict=verdict,
                                  error=verdict.message)
            else:
                await self._ended(run, TaskStatus.COMPLETED, result=result, verdict=verdict)

    def _request_of(self, task: ExecutorTask) -> StageRequest:
        params = JobParams.model_validate(task.params)  # a ValidationError is a ValueError
        landing = self.landing_dir / task.landing_scope if task.landing_scope else self.landing_dir
        typed = {k: TypedValue.model_validate(v) for k, v in (task.parameters or {}).items()}
        return StageRequest(
            job_id=task.job_id, stage=Stage(task.stage), params=params,
            landing_dir=landing, warehouse_dir=self.warehouse_dir,
            threads=params.concurrency, memory_limit=self.memory_limit,
            parameters=bind_values(typed),
        )

    def _call_engine(self, request: StageRequest, run: _Run) -> tuple[LayerResult, Verdict]:
        """The worker thread's whole job: the engine writes the layer, then the gates judge it.

        A layer that fails a gate is removed, as any failed stage leaves no layer; its rejects
        stay, since they are what explains the failure.
        """
        run.token.raise_if_cancelled()
        result = self.engine.run_stage(request, run.report, run.token)
        layer = request.stage.layer
        output = layout.layer_dir(self.warehouse_dir, request.job_id, layer)
        verdict = evaluate(request.params.layers.get(layer), result, output)
        if verdict.failed:
            shutil.rmtree(output, ignore_errors=True)
        return result, verdict

    async def _ended(
        self, run: _Run, status: TaskStatus, *, result: LayerResult | None = None,
        verdict: Verdict | None = None, error: str | None = None,
        failure: dict[str, Any] | None = None,
    ) -> None:
        if run.reason is StopReason.SHUTDOWN and status is not TaskStatus.COMPLETED:
            await self.store.release([run.task_id], self.runner_id)
            log.info("task %s: stopped by shutdown; left for another runner", run.task_id)
            return
        progress = run.progress
        final: tuple[float, int, int] | None = None
        document: dict[str, Any] | None = None
        if result is not None:
            document = {**result.to_dict(), **(verdict.result_fields() if verdict else {})}
            if verdict is not None and verdict.failed:
                document["path"] = None  # the layer was removed; its rejects_path stays
            processed = progress.processed if progress else result.rows
            final = (100.0, processed, progress.total if progress else processed)
        elif progress is not None:
            final = (progress.percent, progress.processed, progress.total)
        written = await self.store.finish(
            run.task_id, self.runner_id, status, result=document or failure, error=error,
            progress=final, now=self.clock(),
        )
        if written is not None:
            log.info("task %s: %s%s", run.task_id, status.value, f": {error}" if error else "")
            if self.on_finished is not None:
                self.on_finished(task_public(written))
        else:
            log.info("task %s: ended %s here, but was already %s elsewhere; left as it is",
                     run.task_id, status.value, run.reason or "finished")

    # --- side loops: progress + leases, and the recovery sweep -------------------------------

    async def _sync_loop(self) -> None:
        """Flush progress every `flush_interval`; renew leases every `lease_seconds / 3`;
        stop any run whose row is no longer ours."""
        loop = asyncio.get_running_loop()
        renew_every = self.lease_seconds / 3
        renewed_at = loop.time()
        while not self._sync_done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.flush_interval, renew_every)):
                    await self._sync_done.wait()
            renew = loop.time() - renewed_at >= renew_every
            with _logged("sync progress and leases"):
                await self._sync_once(renew=renew)
                if renew:
                    renewed_at = loop.time()

    async def _sync_once(self, *, renew: bool) -> None:
        runs = dict(self._active)
        if not runs:
            return
        changed = [(run, run.progress) for run in runs.values()
                   if run.progress is not None and run.progress != run.flushed]
        now = self.clock()
        await self.store.save_progress(
            [(run.task_id, p.percent, p.processed, p.total) for run, p in changed if p],
            self.runner_id, now,
        )
        for run, progress in changed:
            run.flushed = progress
        if renew:
            held = await self.store.renew_leases(runs, self.runner_id, self.lease_seconds, now)
        else:
            held = await self.store.held(runs, self.runner_id)
        for task_id in runs.keys() - held:
            run = runs[task_id]
            if self._active.get(task_id) is run and run.reason is None:
                log.warning("task %s is no longer held by %s (cancelled elsewhere or taken "
                            "over); stopping its engine", task_id, self.runner_id)
                run.stop(StopReason.LOST)

    async def _sweep_loop(self) -> None:
        """Claim orphaned tasks while there are free workers: at start (recovery), every
        `sweep_interval`, and whenever a worker frees up."""
        while not self._stopping.is_set():
            self._sweep_now.clear()
            with _logged("sweep for orphaned tasks"):
                await self.sweep()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sweep_interval):
                    await self._sweep_now.wait()

    async def sweep(self) -> list[str]:
        """Queue orphaned tasks (lease lapsed or never leased) for the free workers."""
        free = self.workers - len(self._runs)
        if free <= 0 or not self.started:
            return []
        found = await self.store.find_orphaned(free, exclude=set(self._runs), now=self.clock())
        for task_id in found:
            log.info("task %s: orphaned; %s takes it", task_id, self.runner_id)
            self.submit(task_id)
        return found


async def _cancel_and_wait(task: asyncio.Task[Any], after: float = 0.0) -> None:
    """Give the task `after` seconds to end by itself, then cancel it and wait for it."""
    if after > 0:
        await asyncio.wait({task}, timeout=after)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """Keep a side loop alive through one failed round (e.g. the database is briefly down)."""
    try:
        yield
    except Exception:
        log.exception("executor: could not %s; trying again", what)
