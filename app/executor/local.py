"""The BatchManager of the embedded default: the watcher calls the executor of its own process.

It lives with the executor (an edge, which may import the port and its errors from `batch/`),
and the composition root hands it to the watcher in place of the HTTP client.

Over loopback HTTP every task create and poll cost a request on both sides (httpx, uvicorn,
FastAPI, JSON both ways) — a few milliseconds of the one event loop's CPU per call. In one process
the watcher calls `ExecutorService` directly and gets the same `TaskPublic` documents and the same
errors as `BatchClient` raises. The executor stays mounted at `/executor` for other callers; a
remote executor (`STRATA_EXECUTOR_URL`, the split topology) is always called over HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from app.batch.client import ExecutorUnavailable, TaskNotFound, TaskRejected
from app.contract.tasks import MAX_IDS_PER_POLL, TaskCreate, TaskPublic
from app.executor.app import ExecutorService, IdempotencyKeyReused, UnknownTask


class LocalBatchManager:
    """Implements `app.batch.manager.BatchManager` on the executor service of this process."""

    def __init__(self, service: ExecutorService) -> None:
        self.service = service

    async def create_task(self, task: TaskCreate) -> TaskPublic:
        try:
            created, _ = await self.service.submit(task)
        except IdempotencyKeyReused as exc:
            raise TaskRejected(409, str(exc)) from exc
        except DBAPIError as exc:
            raise ExecutorUnavailable(f"executor database error: {exc}") from exc
        return created

    async def get_task_status(self, task_id: str) -> TaskPublic:
        try:
            return await self.service.get(task_id)
        except UnknownTask:
            raise TaskNotFound(task_id) from None
        except DBAPIError as exc:
            raise ExecutorUnavailable(f"executor database error: {exc}") from exc

    async def get_tasks(self, task_ids: Sequence[str]) -> list[TaskPublic]:
        ids = list(dict.fromkeys(task_ids))
        found: list[TaskPublic] = []
        try:
            for start in range(0, len(ids), MAX_IDS_PER_POLL):
                found += (await self.service.get_many(ids[start:start + MAX_IDS_PER_POLL])).tasks
        except DBAPIError as exc:
            raise ExecutorUnavailable(f"executor database error: {exc}") from exc
        return found

    async def cancel_task(self, task_id: str) -> TaskPublic | None:
        try:
            return await self.service.cancel(task_id)
        except UnknownTask:
            return None
        except DBAPIError as exc:
            raise ExecutorUnavailable(f"executor database error: {exc}") from exc

    async def list_tasks(self, job_id: str) -> list[TaskPublic]:
        try:
            return (await self.service.list_for_job(job_id)).tasks
        except DBAPIError as exc:
            raise ExecutorUnavailable(f"executor database error: {exc}") from exc

    async def healthy(self) -> bool:
        return self.service.runner.started


if TYPE_CHECKING:  # mypy proves it implements the port
    from app.batch.manager import BatchManager

    _port: type[BatchManager] = LocalBatchManager
