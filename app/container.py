"""The composition root: every service of the embedded app, built in one place, run by the lifespan.

`build_services(settings)` only constructs: no folder is made, no database or socket is opened
(`strata openapi` builds the app and must leave no trace). `run_services(services)` is what the
lifespan enters: it makes the data folders and starts the long-running pieces (the executor's
runner, the watcher, the scheduler, the webhook dispatcher, the wake listener) on an
`AsyncExitStack`, so on the way out each is stopped in reverse order and one that fails to stop
does not leave the others running.

    settings ──▶ build_services ──▶ Services ──▶ run_services (lifespan) ──▶ routes (app/api/deps)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.security import Principal, TokenTable
from app.batch.client import BatchClient, make_http_client
from app.domain.states import JobStatus
from app.executor.app import ExecutorService
from app.executor.engine.base import Engine
from app.executor.engines import load_engine
from app.metrics import Metrics
from app.services.dry_runs import DryRunService
from app.services.inputs import InputClaimer
from app.services.jobs import JobService
from app.services.pipelines import PipelineService
from app.settings import Settings
from app.store.db import asyncpg_dsn, create_engine, create_read_engine, session_factory
from app.store.job_reader import create_job_reader
from app.store.jobs import count_by_status
from app.store.liveness import check_liveness_locally
from app.store.notify import WakeListener
from app.watcher.event import StageDriver
from app.watcher.scheduler import Scheduler, landing_has_input
from app.watcher.watcher import Watcher
from app.webhooks.runtime import WebhookRuntime

log = logging.getLogger("strata")

ReadinessCheck = Callable[[], Awaitable[None]]


def loopback_url(settings: Settings) -> str:
    """Where the embedded executor answers: this process's own port, under `/executor`."""
    host = settings.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/executor"


@dataclass
class Services:
    """Everything the embedded app runs on; `app.state.services`, read through `app.api.deps`."""

    settings: Settings
    tokens: TokenTable | None
    db: AsyncEngine
    reader: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    batch: BatchClient
    metrics: Metrics
    executor: ExecutorService | None
    """The executor mounted at `/executor`; None when `STRATA_EXECUTOR_URL` names a remote one."""
    watcher: Watcher
    jobs: JobService
    pipelines: PipelineService
    scheduler: Scheduler
    """Turns pipeline schedule ticks and backfills into runs; beside the watcher."""
    listener: WakeListener | None
    """PostgreSQL wake-ups from other processes; None on SQLite."""
    webhooks: WebhookRuntime
    """The webhook service the routes use and the dispatcher that sends the outbox."""
    dry_runs: DryRunService
    """Every layer of a spec on a sample, in a scratch folder; creates nothing."""

    @property
    def landing_dir(self) -> Path:
        return self.settings.landing_path()

    @property
    def warehouse_dir(self) -> Path:
        return self.settings.warehouse_path()

    @property
    def max_upload_bytes(self) -> int:
        return self.settings.max_upload_bytes

    def landing_for(self, principal: Principal) -> Path:
        """The caller's own landing space."""
        scope = principal.landing_scope
        return self.landing_dir / scope if scope else self.landing_dir

    @property
    def readiness(self) -> dict[str, ReadinessCheck]:
        """What `/readyz` asks: each check raises when its dependency is unreachable."""
        return {"database": self.database_ready, "executor": self.executor_ready}

    async def database_ready(self) -> None:
        async with self.db.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def executor_ready(self) -> None:
        if not await self.batch.healthy():
            raise ConnectionError("executor did not answer /healthz")

    async def refresh_metrics(self) -> None:
        """Set the gauges `/metrics` reports from the database and the runner."""
        async with self.sessions() as session:
            counts = await count_by_status(session)
        for status in JobStatus:
            self.metrics.jobs_by_status.labels(status.value).set(counts.get(status.value, 0))
        if self.executor is not None:
            self.metrics.executor_queue_depth.set(self.executor.runner.queue_depth)
            self.metrics.executor_running.set(self.executor.runner.running)


def build_services(settings: Settings, tokens: TokenTable | None) -> Services:
    """Construct and wire every service; nothing is opened, created or started here."""
    db = check_liveness_locally(create_engine(settings.database_url, pool_pre_ping=False))
    reader = check_liveness_locally(create_read_engine(settings.database_url))
    sessions = session_factory(db)
    single = session_factory(reader)  # autocommit: reads, and writes of one statement
    executor = (
        ExecutorService.from_settings(settings, sessions, reads=single)
        if settings.executor_url is None else None
    )
    http = make_http_client(settings.executor_url or loopback_url(settings))
    batch = BatchClient(http, token=settings.executor_token)
    metrics = Metrics()
    driver = StageDriver(
        sessions, batch, AsyncLimiter(settings.task_create_rate, 1), settings.warehouse_path(),
        retry_backoff=settings.retry_backoff_seconds, metrics=metrics, single=single,
    )
    watcher = Watcher(sessions, driver, interval=settings.watch_interval,
                      max_workers=settings.max_workers, lease_seconds=settings.lease_seconds,
                      single=single)

    async def cancel_task(task_id: str) -> None:
        await batch.cancel_task(task_id)

    jobs = JobService(sessions, cancel_task=cancel_task, wake=watcher.wake,
                      max_in_flight=settings.max_jobs_in_flight,
                      creates_per_minute=settings.creates_per_minute, metrics=metrics,
                      reader=reader, job_reader=create_job_reader(settings.database_url),
                      warehouse_dir=settings.warehouse_path())
    if executor is not None:  # a finished task reaches the watcher as it is: no poll
        executor.runner.on_finished = watcher.task_finished
    dsn = asyncpg_dsn(settings.database_url)
    # this process wakes its own watcher directly; its own NOTIFYs are for other processes
    listener = WakeListener(dsn, watcher.wake, skip_own=True) if dsn else None
    pipelines = PipelineService(sessions, jobs, inputs=InputClaimer(settings.landing_path()))
    scheduler = Scheduler(pipelines, warehouse_dir=settings.warehouse_path(),
                          interval=settings.scheduler_interval,
                          has_input=landing_has_input(settings.landing_path()))
    webhooks = WebhookRuntime.from_settings(settings, sessions, metrics,
                                            auth_on=tokens is not None)
    dry_runs = DryRunService(dry_run_engine(settings, executor), settings.landing_path(),
                             charge_rate=jobs.charge_create_rate,
                             memory_limit=settings.executor_memory_limit)
    return Services(settings=settings, tokens=tokens, db=db, reader=reader, sessions=sessions,
                    http=http, batch=batch, metrics=metrics, executor=executor, watcher=watcher,
                    jobs=jobs, pipelines=pipelines, scheduler=scheduler, listener=listener,
                    webhooks=webhooks, dry_runs=dry_runs)


def dry_run_engine(settings: Settings, executor: ExecutorService | None) -> Callable[[], Engine]:
    """Dry runs use the embedded executor's engine, or load the configured one on first use."""
    if executor is not None:
        return lambda: executor.engine
    return EngineOnDemand(settings)


class EngineOnDemand:
    """The configured engine, loaded by the first dry run and closed with the app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loaded: Engine | None = None

    def __call__(self) -> Engine:
        if self.loaded is None:
            self.loaded = load_engine(self.settings)
        return self.loaded

    async def close(self) -> None:
        close: Callable[[], Any] | None = getattr(self.loaded, "close", None)
        if close is not None:
            await asyncio.to_thread(close)  # e.g. stopping a SparkSession blocks


@asynccontextmanager
async def run_services(services: Services) -> AsyncIterator[Services]:
    """Make the data folders, start the long-running services, and stop them all on exit.

    Every stop is registered right after its start, so a failed start stops what already runs,
    and a stop that raises still lets the remaining ones run; the first error is raised after.
    """
    if services.tokens is None:
        log.warning("AUTHENTICATION IS OFF: no STRATA_API_TOKENS; serving %s only",
                    services.settings.host)
    services.landing_dir.mkdir(parents=True, exist_ok=True)
    services.warehouse_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(services.reader.dispose)
        if services.jobs.job_reader is not None:
            stack.push_async_callback(services.jobs.job_reader.close)
        stack.push_async_callback(services.db.dispose)
        stack.push_async_callback(services.http.aclose)
        if services.executor is not None:
            await services.executor.start()
            stack.push_async_callback(services.executor.stop)
        services.watcher.start()
        stack.push_async_callback(services.watcher.stop)
        services.scheduler.start()
        stack.push_async_callback(services.scheduler.stop)
        services.webhooks.start()
        stack.push_async_callback(services.webhooks.stop)
        if isinstance(services.dry_runs.engine, EngineOnDemand):
            stack.push_async_callback(services.dry_runs.engine.close)
        if services.listener is not None:
            services.listener.start()
            stack.push_async_callback(services.listener.stop)
        yield services
