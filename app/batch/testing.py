"""An in-memory BatchManager for tests and benchmarks: an executor that runs nothing by itself.

Tasks exist as soon as they are created and change only when the test says so (`start`,
`complete`, `fail`, `complete_all`), so every status the watcher can meet is reachable without
an engine, a clock or a network. `unavailable = True` makes every call raise
`ExecutorUnavailable`, as an unreachable executor does; `forget` makes the executor lose a task.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.batch.client import ExecutorUnavailable, TaskNotFound
from app.contract.tasks import TaskCreate, TaskPublic, TaskStatus
from app.store.types import utcnow


class InMemoryBatchManager:
    """Implements `app.batch.manager.BatchManager`; counts the calls it answers."""

    def __init__(
        self, clock: Callable[[], datetime] = utcnow, *, start_on_poll: bool = False
    ) -> None:
        self.clock = clock
        self.start_on_poll = start_on_poll
        """A poll of a queued task finds it processing at 50 %, as a free executor would."""
        self.tasks: dict[str, TaskPublic] = {}
        self.created: list[TaskCreate] = []
        """Every create body received, replays included."""
        self.keys: dict[str, str] = {}
        self.polls = 0
        """Single-task polls answered."""
        self.batch_polls = 0
        """Many-task polls (`get_tasks`) answered."""
        self.cancelled: list[str] = []
        self.unavailable = False

    # --- the port ------------------------------------------------------------------------------

    async def create_task(self, task: TaskCreate) -> TaskPublic:
        self._check_up()
        self.created.append(task)
        if task.idempotency_key in self.keys:
            return self.tasks[self.keys[task.idempotency_key]]
        now = self.clock()
        created = TaskPublic(
            task_id=str(uuid.uuid4()), job_id=task.job_id, stage=task.stage,
            attempt=task.attempt, status=TaskStatus.CREATED, progress=0.0, processed=0,
            total=0, result=None, error=None, created_at=now, updated_at=now,
        )
        self.tasks[created.task_id] = created
        self.keys[task.idempotency_key] = created.task_id
        return created

    async def get_task_status(self, task_id: str) -> TaskPublic:
        self._check_up()
        self.polls += 1
        if task_id not in self.tasks:
            raise TaskNotFound(task_id)
        if self.start_on_poll and self.tasks[task_id].status is TaskStatus.CREATED:
            return self.start(task_id)
        return self.tasks[task_id]

    async def get_tasks(self, task_ids: Sequence[str]) -> list[TaskPublic]:
        self._check_up()
        self.batch_polls += 1
        found = []
        for task_id in dict.fromkeys(task_ids):
            if task_id in self.tasks:
                if self.start_on_poll and self.tasks[task_id].status is TaskStatus.CREATED:
                    self.start(task_id)
                found.append(self.tasks[task_id])
        return found

    async def cancel_task(self, task_id: str) -> TaskPublic | None:
        self._check_up()
        self.cancelled.append(task_id)
        task = self.tasks.get(task_id)
        if task is None or task.finished:
            return task
        return self._set(task_id, status=TaskStatus.CANCELLED)

    async def list_tasks(self, job_id: str) -> list[TaskPublic]:
        self._check_up()
        return sorted((t for t in self.tasks.values() if t.job_id == job_id),
                      key=lambda t: t.created_at)

    async def healthy(self) -> bool:
        return not self.unavailable

    # --- what a test does to the executor ------------------------------------------------------

    def start(self, task_id: str, progress: float = 50.0) -> TaskPublic:
        return self._set(task_id, status=TaskStatus.PROCESSING, progress=progress)

    def complete(self, task_id: str, result: dict[str, Any] | None = None) -> TaskPublic:
        task = self.tasks[task_id]
        result = result if result is not None else {
            "rows": 20, "path": f"/nowhere/{task.job_id}", "seconds": 0.01}
        return self._set(task_id, status=TaskStatus.COMPLETED, progress=100.0, result=result)

    def fail(self, task_id: str, error: str = "the stage failed") -> TaskPublic:
        return self._set(task_id, status=TaskStatus.FAILED, error=error)

    def complete_all(self) -> None:
        """Complete every task that has not finished."""
        for task_id, task in list(self.tasks.items()):
            if not task.finished:
                self.complete(task_id)

    def forget(self, task_id: str) -> None:
        """The executor loses the task (e.g. its database was replaced), its key included."""
        del self.tasks[task_id]
        self.keys = {key: known for key, known in self.keys.items() if known != task_id}

    def _set(self, task_id: str, **changes: Any) -> TaskPublic:
        task = self.tasks[task_id].model_copy(update={**changes, "updated_at": self.clock()})
        self.tasks[task_id] = task
        return task

    def _check_up(self) -> None:
        if self.unavailable:
            raise ExecutorUnavailable("the in-memory executor is switched off")


if TYPE_CHECKING:  # mypy proves the fake implements the port it stands in for
    from app.batch.manager import BatchManager

    _port: type[BatchManager] = InMemoryBatchManager
