"""The executor's task format: the one definition both the executor and its client import.

The executor (`app/executor`) serves these bodies at `/v1/tasks`; the BatchManager client
(`app/batch`) sends `TaskCreate` and reads `TaskPublic` back; the watcher compares `TaskStatus`
values. A field added here is added to both sides at once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.domain.owners import OWNER_PATTERN
from app.domain.parameters import PARAMETER_NAME, TypedValue
from app.domain.params import JobParams
from app.domain.states import Stage


class TaskStatus(StrEnum):
    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Completed, failed or cancelled: the task will not change any more."""
        return self in FINISHED_STATUSES


ACTIVE_STATUSES = frozenset({TaskStatus.CREATED, TaskStatus.PROCESSING})
MAX_IDS_PER_POLL = 100
"""How many task ids one `GET /v1/tasks?ids=…` may name."""
FINISHED_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


def _of_its_type(typed: TypedValue) -> TypedValue:
    """A value that is not of its type is a 422 naming it here, not a failed stage later."""
    try:
        typed.to_python()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{typed.value!r} is not a {typed.type}: {exc}") from None
    return typed


class TaskCreate(BaseModel):
    """One stage of one job to run; `idempotency_key` makes a re-sent create harmless.

    The client sends only the fields that were set (`wire_body`), so an optional field added
    here reaches an executor only when a caller fills it in.
    """

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
    parameters: dict[
        Annotated[str, Field(pattern=PARAMETER_NAME)],
        Annotated[TypedValue, AfterValidator(_of_its_type)],
    ] = Field(
        default_factory=dict,
        description="The run's typed parameters; user SQL reads each as `$name`, bound as a value.",
    )

    def wire_body(self) -> dict[str, Any]:
        """The JSON body of `POST /v1/tasks`: the fields the caller set, as it set them."""
        return self.model_dump(mode="json", exclude_unset=True)


class TaskPublic(BaseModel):
    """A task as the executor reports it: its status, progress, and result or error."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    job_id: str
    stage: Stage
    attempt: int
    status: TaskStatus
    progress: Annotated[float, Field(ge=0, le=100, description="Percent done, 0 to 100.")]
    processed: int
    total: int
    result: dict[str, Any] | None = Field(
        description="What the stage wrote (rows, rejects, path, seconds…) once completed, or "
                    "when a data-quality gate failed it."
    )
    error: str | None = Field(description="Why the stage failed, when it failed.")
    reason: str | None = Field(
        None, description="Machine-readable cause of a failure that says one, e.g. "
                          "TooManyRejects or SchemaDrift.")
    retryable: bool = Field(
        True, description="False when running the stage again would fail the same way.")
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        """Completed, failed or cancelled: it will not change any more."""
        return self.status.finished

    @property
    def succeeded(self) -> bool:
        return self.status is TaskStatus.COMPLETED
