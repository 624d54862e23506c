"""Bodies of the executor's HTTP API (`/v1/tasks`) beyond the task format itself.

The task format (`TaskCreate`, `TaskPublic`, `TaskStatus`) lives in `app.contract.tasks`, which the
BatchManager client imports too; this module maps the `executor_tasks` table onto it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.contract.tasks import TaskPublic, TaskStatus
from app.domain.states import Stage
from app.store.models import ExecutorTask


def task_public(task: ExecutorTask) -> TaskPublic:
    """The document of a stored task."""
    return TaskPublic(
        task_id=task.id, job_id=task.job_id, stage=Stage(task.stage), attempt=task.attempt,
        status=TaskStatus(task.status), progress=min(max(task.progress, 0.0), 100.0),
        processed=task.processed, total=task.total, result=task.result, error=task.error,
        created_at=task.created_at, updated_at=task.updated_at, **_failure_of(task),
    )


def _failure_of(task: ExecutorTask) -> dict[str, Any]:
    """`reason` and `retryable` of a failed task, which its result carries (a gate's verdict)."""
    if task.status != TaskStatus.FAILED or not task.result:
        return {}
    return {"reason": task.result.get("reason"),
            "retryable": task.result.get("retryable") is not False}


class TaskList(BaseModel):
    tasks: list[TaskPublic]


class ExecutorHealth(BaseModel):
    status: str = "ok"
    runner_id: str
    running: int = Field(description="Stages running now in this process.")
    queue_depth: int = Field(description="Tasks waiting here for a free worker.")
