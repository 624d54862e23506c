"""The BatchManager port: what the watcher needs from an executor, whatever carries it.

`BatchClient` implements it over HTTP; `app.batch.testing.InMemoryBatchManager` implements it in
memory for tests and benchmarks. Both raise the errors of `app.batch.client` (`TaskNotFound`,
`TaskRejected`, `ExecutorUnavailable`) and speak the task format of `app.contract.tasks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.contract.tasks import TaskCreate, TaskPublic


class BatchManager(Protocol):
    async def create_task(self, task: TaskCreate) -> TaskPublic:
        """Create the task, or return the one that already has its idempotency key."""
        ...

    async def get_task_status(self, task_id: str) -> TaskPublic:
        """The task now; `TaskNotFound` when the executor does not know it."""
        ...

    async def get_tasks(self, task_ids: Sequence[str]) -> list[TaskPublic]:
        """The tasks among `task_ids` the executor knows, in as few requests as it takes."""
        ...

    async def cancel_task(self, task_id: str) -> TaskPublic | None:
        """Cancel the task (a finished one is returned unchanged); None if it is unknown."""
        ...

    async def list_tasks(self, job_id: str) -> list[TaskPublic]:
        """A job's tasks, oldest first."""
        ...

    async def healthy(self) -> bool:
        """Whether the executor answers now."""
        ...
