"""The app factory: API + watcher, and in the embedded default the executor on the same port.

In the embedded default the executor app is mounted under `/executor` and the BatchManager client
calls it over loopback HTTP, so the laptop demo runs the same code path as a cluster.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter
from fastapi import FastAPI
from sqlalchemy import text

import app
from app.api.deps import ApiContext
from app.api.errors import DOMAIN_ERROR_HANDLERS
from app.api.routes import jobs, landing, pipelines, system, tables, ui
from app.api.security import TokenTable
from app.batch.client import BatchClient, make_http_client
from app.domain.states import JobStatus
from app.executor.app import ExecutorService, create_executor_app
from app.logs import RequestIdMiddleware
from app.metrics import Metrics
from app.problems import PlainErrorsAsProblems, install_problem_handlers, use_problem_schemas
from app.services.inputs import InputClaimer
from app.services.jobs import JobService
from app.services.pipelines import PipelineService
from app.settings import Settings
from app.store.db import create_engine, create_read_engine, session_factory
from app.store.jobs import count_by_status
from app.store.notify import WakeListener, asyncpg_dsn
from app.watcher.event import StageDriver
from app.watcher.scheduler import Scheduler, landing_has_input
from app.watcher.watcher import Watcher

log = logging.getLogger("strata")

DESCRIPTION = """Strata runs data-layer jobs: POST a job, and a watcher moves its data through
Landing → ODS → DWD → DWS → DS one durable stage at a time. Poll the job, read its events, and
read the served DS rows when it has Succeeded. Errors are RFC 9457 problem+json."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/executor"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    tokens = TokenTable.parse(settings.api_tokens, settings.admin_owners)
    if tokens is None and not is_loopback(settings.host):
        raise RuntimeError(
            f"refusing to serve on {settings.host} without STRATA_API_TOKENS: "
            "set tokens, or bind to 127.0.0.1"
        )
    landing_dir, warehouse_dir = settings.landing_path(), settings.warehouse_path()
    landing_dir.mkdir(parents=True, exist_ok=True)
    warehouse_dir.mkdir(parents=True, exist_ok=True)

    db = create_engine(settings.database_url)
    reader = create_read_engine(settings.database_url)
    sessions = session_factory(db)
    executor = (
        ExecutorService.from_settings(settings, sessions, reads=session_factory(reader))
        if settings.executor_url is None else None
    )
    http = make_http_client(settings.executor_url or loopback_url(settings))
    batch = BatchClient(http, token=settings.executor_token)
    metrics = Metrics()
    driver = StageDriver(
        sessions, batch, AsyncLimiter(settings.task_create_rate, 1), warehouse_dir,
        retry_backoff=settings.retry_backoff_seconds, metrics=metrics,
    )
    watcher = Watcher(sessions, driver, interval=settings.watch_interval,
                      max_workers=settings.max_workers, lease_seconds=settings.lease_seconds)

    async def cancel_task(task_id: str) -> None:
        await batch.cancel_task(task_id)

    job_service = JobService(sessions, cancel_task=cancel_task, wake=watcher.wake,
                             max_in_flight=settings.max_jobs_in_flight,
                             creates_per_minute=settings.creates_per_minute, metrics=metrics,
                             reader=reader)
    pipeline_service = PipelineService(sessions, job_service,
                                       inputs=InputClaimer(landing_dir))
    scheduler = Scheduler(pipeline_service, warehouse_dir=warehouse_dir,
                          interval=settings.scheduler_interval,
                          has_input=landing_has_input(landing_dir))
    if executor is not None:
        executor.runner.on_finished = watcher.wake
    dsn = asyncpg_dsn(settings.database_url)
    listener = WakeListener(dsn, watcher.wake) if dsn else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if tokens is None:
            log.warning("AUTHENTICATION IS OFF: no STRATA_API_TOKENS; serving %s only",
                        settings.host)
        if executor is not None:
            await executor.start()
        watcher.start()
        scheduler.start()
        if listener is not None:
            listener.start()
        try:
            yield
        finally:
            if listener is not None:
                await listener.stop()
            await scheduler.stop()
            await watcher.stop()
            if executor is not None:
                await executor.stop()
            await http.aclose()
            await db.dispose()
            await reader.dispose()

    api = FastAPI(title="Strata", version=app.__version__, description=DESCRIPTION,
                  lifespan=lifespan, max_body_size=settings.max_body_bytes)
    api.add_middleware(RequestIdMiddleware)
    # outermost, so the body limiter's plain-text 413 becomes a problem document too
    build_stack = api.build_middleware_stack
    api.build_middleware_stack = lambda: PlainErrorsAsProblems(build_stack())  # type: ignore[method-assign]
    api.state.api = ApiContext(jobs=job_service, tokens=tokens, landing_dir=landing_dir,
                               warehouse_dir=warehouse_dir,
                               max_upload_bytes=settings.max_upload_bytes)
    api.state.watcher = watcher
    api.state.pipelines, api.state.scheduler = pipeline_service, scheduler

    async def database_ready() -> None:
        async with db.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def executor_ready() -> None:
        if not await batch.healthy():
            raise ConnectionError("executor did not answer /healthz")

    async def refresh_metrics() -> None:
        async with sessions() as session:
            counts = await count_by_status(session)
        for status in JobStatus:
            metrics.jobs_by_status.labels(status.value).set(counts.get(status.value, 0))
        if executor is not None:
            metrics.executor_queue_depth.set(executor.runner.queue_depth)
            metrics.executor_running.set(executor.runner.running)

    api.state.metrics = metrics
    api.state.refresh_metrics = refresh_metrics
    api.state.readiness = {"database": database_ready, "executor": executor_ready}
    install_problem_handlers(api, DOMAIN_ERROR_HANDLERS)
    use_problem_schemas(api)
    api.include_router(jobs.router)
    api.include_router(pipelines.router)
    api.include_router(tables.router)
    api.include_router(landing.router)
    api.include_router(system.router)
    api.include_router(ui.router)
    if executor is not None:
        api.mount("/executor", create_executor_app(executor))
    return api
