"""Bodies of the executor's HTTP API (`/v1/tasks`), kept apart from the `executor_tasks` table.

The BatchManager client mirrors `TaskPublic` on its side; the two meet only as JSON.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.domain.owners import OWNER_PATTERN
from app.domain.parameters import TypedValue
from app.domain.params import JobParams
from app.domain.states import Stage
from app.store.models import ExecutorTask


class TaskStatus(StrEnum):
    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


ACTIVE_STATUSES = frozenset({TaskStatus.CREATED, TaskStatus.PROCESSING})
FINISHED_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class TaskCreate(BaseModel):
    """One stage of one job to run; `idempotency_key` makes a re-sent create harmless."""

    model_config = ConfigDict(extra="forbid")

    job_id: Annotated[str, Field(min_length=1, max_length=36)]
    stage: Stage
    attempt: Annotated[int, Field(ge=1, le=1_000)]
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)]
    params: JobParams
    landing_scope: Annotated[
        str | None,
        Field(pattern=OWNER_PATTERN,
              description="The job owner's folder under the landing directory; none: the root."),
    ] = None
    parameters: dict[str, TypedValue] | None = Field(
        default=None, description="A pipeline run's typed values, bound in SQL as $name.")


class TaskPublic(BaseModel):
    task_id: str
    job_id: str
    stage: Stage
    attempt: int
    status: TaskStatus
    progress: Annotated[float, Field(ge=0, le=100, description="Percent done, 0 to 100.")]
    processed: int
    total: int
    result: dict[str, Any] | None = Field(
        description="What the stage wrote (rows, rejects, path, seconds…) once completed."
    )
    error: str | None = Field(description="Why the stage failed, when it failed.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, task: ExecutorTask) -> TaskPublic:
        return cls(
            task_id=task.id, job_id=task.job_id, stage=Stage(task.stage), attempt=task.attempt,
            status=TaskStatus(task.status), progress=min(max(task.progress, 0.0), 100.0),
            processed=task.processed, total=task.total, result=task.result, error=task.error,
            created_at=task.created_at, updated_at=task.updated_at,
        )


class TaskList(BaseModel):
    tasks: list[TaskPublic]


class ExecutorHealth(BaseModel):
    status: str = "ok"
    runner_id: str
    running: int = Field(description="Stages running now in this process.")
    queue_depth: int = Field(description="Tasks waiting here for a free worker.")
