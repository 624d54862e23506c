"""The executor's HTTP API (`/v1/tasks`) and the service behind it.

The app can run two ways:

* embedded — mounted under `/executor` inside the main API app. Starlette runs no lifespan of a
  mounted app, so `create_executor_app` has none: the parent's lifespan calls
  `ExecutorService.start()` / `stop()`;
* standalone — `create_standalone_executor_app(settings)` (`strata executor`), whose own lifespan
  opens the database, starts the runner and stops it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import app as strata
from app.contract.tasks import MAX_IDS_PER_POLL, TaskCreate, TaskPublic, TaskStatus
from app.executor.engine.base import Engine
from app.executor.runner import TaskRunner
from app.executor.schemas import ExecutorHealth, TaskList, task_public
from app.executor.tasks import TaskStore
from app.problems import (
    PROBLEM_RESPONSES,
    FieldError,
    ProblemError,
    install_problem_handlers,
    problem_response,
)
from app.settings import Settings
from app.store.db import create_engine, create_read_engine, session_factory
from app.store.liveness import check_liveness_locally

log = logging.getLogger("strata.executor")

DESCRIPTION = """The executor runs one stage of one Strata job per task, in a bounded pool, and
reports its status and progress. The BatchManager client of the watcher is its only caller.
Errors are RFC 9457 problem+json."""


class UnknownTask(LookupError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found")


class IdempotencyKeyReused(Exception):
    """The key is taken by a task of another job, stage or attempt."""


# --- the service -------------------------------------------------------------------------------


class ExecutorService:
    """What the routes call: the task store, the runner and the engine, started by whoever hosts
    the app (the main app's lifespan when embedded, its own when standalone)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        engine: Engine,
        *,
        landing_dir: Path,
        warehouse_dir: Path,
        token: str | None = None,
        workers: int = 2,
        memory_limit: str | None = None,
        lease_seconds: float = 30.0,
        sweep_interval: float = 3.0,
        flush_interval: float = 0.5,
        runner_id: str | None = None,
        owns_engine: bool = False,
        reads: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.sessions = sessions
        self.engine = engine
        self.token = token or None
        self.store = TaskStore(sessions, reads)
        self.runner = TaskRunner(
            self.store, engine, landing_dir=landing_dir, warehouse_dir=warehouse_dir,
            workers=workers, memory_limit=memory_limit, lease_seconds=lease_seconds,
            sweep_interval=sweep_interval, flush_interval=flush_interval, runner_id=runner_id,
        )
        self._owns_engine = owns_engine

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        engine: Engine | None = None, reads: async_sessionmaker[AsyncSession] | None = None,
    ) -> ExecutorService:
        from app.executor.engines import load_engine
        from app.executor.guard import stage_memory_limit

        return cls(
            sessions, engine or load_engine(settings), reads=reads,
            landing_dir=settings.landing_path(), warehouse_dir=settings.warehouse_path(),
            token=settings.executor_token, workers=settings.executor_workers,
            memory_limit=stage_memory_limit(settings.executor_memory_limit,
                                            settings.executor_workers),
            lease_seconds=settings.lease_seconds,
            owns_engine=engine is None,
        )

    async def start(self) -> None:
        """Sweep the scratch folders of stages that died with their process, then run tasks."""
        from app.executor.guard import sweep_unowned_work_dirs

        await sweep_unowned_work_dirs(self.runner.warehouse_dir, self.store.running_stages)
        await self.runner.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the runner; unfinished tasks are left for another executor to resume."""
        await self.runner.stop(grace)
        close: Callable[[], Any] | None = getattr(self.engine, "close", None)
        if self._owns_engine and close is not None:
            await asyncio.to_thread(close)  # e.g. stopping a SparkSession blocks

    async def submit(self, body: TaskCreate) -> tuple[TaskPublic, bool]:
        """Create the task and queue it, or return the one with the same idempotency key."""
        # a free worker takes the new task in its insert, which saves the claim's transaction
        reserved = await self.runner.reserve()
        try:
            task, created = await self.store.create_or_get(
                body, claimed_by=(self.runner.runner_id, self.runner.lease_seconds)
                if reserved else None)
        except BaseException:
            if reserved:
                self.runner.unreserve()
            raise
        if reserved and created:
            self.runner.run_claimed(task)
        elif reserved:
            self.runner.unreserve()
        if not created and (task.job_id, task.stage, task.attempt) != (
            body.job_id, body.stage.value, body.attempt
        ):
            raise IdempotencyKeyReused(
                f"idempotency_key {body.idempotency_key!r} belongs to task {task.id} "
                f"(job {task.job_id}, {task.stage}, attempt {task.attempt})"
            )
        if created and not reserved:
            self.runner.submit(task.id)
        return self._public(task_public(task)), created

    async def get(self, task_id: str) -> TaskPublic:
        task = await self.store.get(task_id)
        if task is None:
            raise UnknownTask(task_id)
        return self._public(task_public(task))

    async def get_many(self, task_ids: list[str]) -> TaskList:
        tasks = await self.store.get_many(task_ids)
        return TaskList(tasks=[self._public(task_public(t)) for t in tasks])

    async def list_for_job(self, job_id: str) -> TaskList:
        tasks = await self.store.list_for_job(job_id)
        return TaskList(tasks=[self._public(task_public(t)) for t in tasks])

    async def cancel(self, task_id: str) -> TaskPublic:
        task = await self.runner.cancel(task_id)
        if task is None:
            raise UnknownTask(task_id)
        return task_public(task)

    def health(self) -> ExecutorHealth:
        return ExecutorHealth(runner_id=self.runner.runner_id, running=self.runner.running,
                              queue_depth=self.runner.queue_depth)

    def check_token(self, presented: str | None) -> bool:
        """Constant-time comparison; no token configured lets every caller in."""
        if self.token is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode(), self.token.encode())

    def _public(self, task: TaskPublic) -> TaskPublic:
        """Overlay the live progress of a task running here (the DB copy lags up to a flush)."""
        live = self.runner.live_progress(task.task_id)
        if live is None or task.status is not TaskStatus.PROCESSING:
            return task
        return task.model_copy(update={"progress": live.percent, "processed": live.processed,
                                       "total": live.total})


# --- the routes --------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="STRATA_EXECUTOR_TOKEN, when set.")


async def get_service(request: Request) -> ExecutorService:
    service = request.app.state.executor
    assert isinstance(service, ExecutorService)
    return service


Service = Annotated[ExecutorService, Depends(get_service)]


async def require_token(
    service: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    presented = None
    if credentials is not None and credentials.scheme.lower() == "bearer":
        presented = credentials.credentials
    if not service.check_token(presented):
        raise ProblemError(401, "a valid bearer token is required",
                           headers={"WWW-Authenticate": "Bearer"})


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: PROBLEM_RESPONSES[code] for code in codes}


tasks_router = APIRouter(prefix="/v1/tasks", tags=["tasks"],
                         dependencies=[Depends(require_token)], responses=_problems(401))


@tasks_router.post(
    "", operation_id="create_task", status_code=status.HTTP_201_CREATED,
    responses={200: {"model": TaskPublic, "description": "The task with this idempotency_key "
                     "already exists"}, **_problems(400, 409, 422)},
)
async def create_task(body: TaskCreate, service: Service, request: Request,
                      response: Response) -> TaskPublic:
    """Accept one stage of one job; the same `idempotency_key` returns the same task."""
    task, created = await service.submit(body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    # a path, as the API's own Location headers are: `url_for` walked every route per create
    response.headers["Location"] = f"{request.scope.get('root_path', '')}/v1/tasks/{task.task_id}"
    return task


@tasks_router.get("", operation_id="list_tasks", responses=_problems(422))
async def list_tasks(
    service: Service,
    job_id: Annotated[str | None, Query(min_length=1, max_length=36,
                                        description="The job's tasks.")] = None,
    ids: Annotated[list[str] | None, Query(
        max_length=MAX_IDS_PER_POLL,
        description="These tasks (repeat the parameter), the unknown ones left out: a "
                    "watcher polls many tasks with one request.")] = None,
) -> TaskList:
    """A job's tasks, oldest first; or the tasks named by `ids`. Exactly one of the two."""
    if (job_id is None) == (ids is None):
        field = "query.ids" if ids is not None else "query.job_id"
        raise ProblemError(422, "give exactly one of job_id and ids", errors=[
            FieldError(field=field, message="exactly one of job_id and ids", type="value_error")])
    if ids is not None:
        return await service.get_many(ids)
    assert job_id is not None
    return await service.list_for_job(job_id)


@tasks_router.get("/{task_id}", operation_id="get_task", responses=_problems(404))
async def get_task(task_id: str, service: Service) -> TaskPublic:
    """A task's status, progress, and its result or error once finished."""
    return await service.get(task_id)


@tasks_router.delete("/{task_id}", operation_id="cancel_task", responses=_problems(404))
async def cancel_task(task_id: str, service: Service) -> TaskPublic:
    """Cancel the task; a finished task is returned unchanged."""
    return await service.cancel(task_id)


system_router = APIRouter(tags=["system"])


@system_router.get("/healthz", operation_id="healthz")
async def healthz(service: Service) -> ExecutorHealth:
    """The executor is up; how busy it is."""
    return service.health()


async def _on_unknown(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(404, str(exc), title="Task not found")


async def _on_key_reused(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(409, str(exc), title="Idempotency key reused")


def create_executor_app(
    service: ExecutorService,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The executor's FastAPI app. It starts nothing itself: its host calls `service.start()`."""
    api = FastAPI(title="Strata executor", version=strata.__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    api.state.executor = service
    install_problem_handlers(api, {
        UnknownTask: _on_unknown,
        IdempotencyKeyReused: _on_key_reused,
    })
    api.include_router(tasks_router)
    api.include_router(system_router)
    return api


def create_standalone_executor_app(
    settings: Settings, engine: Engine | None = None
) -> FastAPI:
    """`strata executor`: its own database engine and runner, run by its own lifespan."""
    db = check_liveness_locally(create_engine(settings.database_url, pool_pre_ping=False))
    reader = check_liveness_locally(create_read_engine(settings.database_url))
    service = ExecutorService.from_settings(settings, session_factory(db), engine=engine,
                                            reads=session_factory(reader))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings.landing_path().mkdir(parents=True, exist_ok=True)
        settings.warehouse_path().mkdir(parents=True, exist_ok=True)
        if service.token is None:
            log.warning("executor: STRATA_EXECUTOR_TOKEN is not set; /v1/tasks is open to any "
                        "caller that can reach this port")
        async with AsyncExitStack() as stack:  # a failing stop still runs the others
            stack.push_async_callback(reader.dispose)
            stack.push_async_callback(db.dispose)
            await service.start()
            stack.push_async_callback(service.stop)
            yield

    return create_executor_app(service, lifespan=lifespan)
