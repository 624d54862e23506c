"""Request and response bodies of the public API (separate from the tables on purpose)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import to_json

from app.domain.conditions import Condition
from app.domain.parameters import TypedValue
from app.domain.params import JobParams
from app.domain.states import JobStatus
from app.store.documents import job_document
from app.store.job_reader import StoredJob
from app.store.jobs import JobRow
from app.store.landing import LandedFile
from app.store.models import Job, JobEvent

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Description = Annotated[str, Field(max_length=4000)]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description | None = None
    params: JobParams
    suspend: bool = Field(default=False, strict=True,
                          description="Create suspended: nothing runs yet.")


class JobUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: Name | SkipJsonSchema[None] = None
    description: Description | None = None
    suspend: bool | SkipJsonSchema[None] = None

    @field_validator("suspend", mode="before")
    @classmethod
    def _a_real_boolean(cls, value: Any) -> Any:
        """true or false only: "yes" or 1 is a mistake, not a wish to suspend."""
        if value is not None and not isinstance(value, bool):
            raise ValueError("Input should be a valid boolean: true or false")
        return value

    @model_validator(mode="after")
    def _something(self) -> JobUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one of name, description, suspend")
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null")
        if "suspend" in self.model_fields_set and self.suspend is None:
            raise ValueError("suspend cannot be null")
        return self


Action = Literal["cancel", "suspend", "resume", "retry"]


class PipelineRun(BaseModel):
    """What made a pipeline's run: fixed when the run is created."""

    name: str
    version: int
    trigger: Literal["manual", "schedule", "backfill"]
    scheduled_for: datetime | None = Field(description="The tick; null for a manual run.")
    parameters: dict[str, TypedValue]


class JobPublic(BaseModel):
    job_id: str
    name: str
    description: str | None
    owner: str
    status: JobStatus
    suspend: bool
    allowed_actions: list[Action] = Field(
        description="The actions the state machine accepts now (`POST /v1/jobs/{id}/{action}`)."
    )
    params: JobParams
    results: dict[str, Any] = Field(
        description="`batch`: the current task and its progress; `layers`: what each layer wrote."
    )
    conditions: list[Condition]
    attempt: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    pipeline: PipelineRun | None = Field(default=None,
                                         description="The pipeline that made this run, if any.")

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        """The validated model of `job_document(job)`: one mapping from a job to its document."""
        return cls.model_validate(job_document(job))


class JobList(BaseModel):
    total: int
    jobs: list[JobPublic]


class JsonDocument(Response):
    """A response whose body is already a serialised document (no response-model pass)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content, inf_nan_mode="null")


def job_response(job: Job | JobRow | StoredJob, status_code: int = 200,
                 headers: dict[str, str] | None = None) -> JsonDocument:
    return JsonDocument(job_document(job), status_code=status_code, headers=headers)


def job_list_response(total: int, jobs: list[Job] | list[JobRow]) -> JsonDocument:
    return JsonDocument({"total": total, "jobs": [job_document(j) for j in jobs]})


class EventPublic(BaseModel):
    event: str
    from_status: str | None
    to_status: str
    attempt: int
    message: str
    at: datetime

    @classmethod
    def of(cls, event: JobEvent) -> EventPublic:
        return cls(event=event.event, from_status=event.from_status, to_status=event.to_status,
                   attempt=event.attempt, message=event.message, at=event.at)


class EventList(BaseModel):
    events: list[EventPublic]


class LandingFilePublic(BaseModel):
    path: str
    size: int
    modified_at: datetime

    @classmethod
    def of(cls, landed: LandedFile) -> LandingFilePublic:
        return cls(path=landed.path, size=landed.size, modified_at=landed.modified_at)


class LandingList(BaseModel):
    files: list[LandingFilePublic]


class FsmTransition(BaseModel):
    event: str
    source: str
    target: str


class FsmDiagram(BaseModel):
    format: Literal["mermaid"] = "mermaid"
    diagram: str
    states: list[str]
    initial: str = Field(description="The state a new job starts in.")
    transitions: list[FsmTransition] = Field(
        description="Every transition of the machine: the event and the states it links.")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
