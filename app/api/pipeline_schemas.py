"""Request and response bodies of `/v1/pipelines` (the PUT body is the domain's `PipelineSpec`)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.domain.parameters import PARAMETER_NAME
from app.domain.params import JobParams
from app.domain.pipelines import History, ParameterDecl
from app.domain.schedule import Schedule, day_bounds, zone_of
from app.store.models import PipelineTick, PipelineVersion

if TYPE_CHECKING:
    from app.services.pipelines import BackfillView, PipelineView

Outcome = Literal["created", "skipped_overlap", "skipped_no_input", "missed", "pending"]


class SchedulePublic(Schedule):
    next_fire_at: datetime | None = Field(
        description="The next tick the scheduler will decide; null while suspended.")


class TickPublic(BaseModel):
    scheduled_for: datetime
    trigger: Literal["schedule", "backfill"]
    outcome: Outcome = Field(description="`pending`: a backfill tick waiting for a free slot.")
    job_id: str | None
    decided_at: datetime

    @classmethod
    def of(cls, tick: PipelineTick) -> TickPublic:
        return cls.model_validate(tick, from_attributes=True)


class PipelinePublic(BaseModel):
    name: str
    owner: str
    version: int
    description: str | None
    params: JobParams
    parameters: dict[str, ParameterDecl]
    schedule: SchedulePublic | None
    history: History
    suspend: bool = Field(description="The schedule is paused (manual runs and backfills work).")
    last_ticks: list[TickPublic] = Field(description="The latest ticks, newest first.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: PipelineView) -> PipelinePublic:
        pipeline, spec = view.pipeline, view.spec
        schedule = None
        if spec.schedule is not None:
            next_fire = None if pipeline.suspend else pipeline.next_fire_at
            schedule = SchedulePublic(**spec.schedule.model_dump(), next_fire_at=next_fire)
        return cls(
            name=pipeline.name, owner=pipeline.owner, version=pipeline.version,
            description=spec.description, params=spec.params, parameters=spec.parameters,
            schedule=schedule, history=spec.history, suspend=pipeline.suspend,
            last_ticks=[TickPublic.of(t) for t in view.ticks],
            created_at=pipeline.created_at, updated_at=pipeline.updated_at,
        )


class PipelineList(BaseModel):
    total: int
    pipelines: list[PipelinePublic]


class VersionPublic(BaseModel):
    version: int
    created_at: datetime
    spec: dict[str, Any] = Field(description="The PUT body of this version, defaults filled.")

    @classmethod
    def of(cls, version: PipelineVersion) -> VersionPublic:
        return cls(version=version.version, created_at=version.created_at, spec=version.spec)


class VersionList(BaseModel):
    versions: list[VersionPublic]


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: Annotated[dict[str, Any], Field(max_length=64)] = Field(
        default_factory=dict, description="Values of the declared parameters, by name.")

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        import re

        for name in value:
            if not re.match(PARAMETER_NAME, name):
                raise ValueError(f"parameter name {name[:64]!r} must match {PARAMETER_NAME}")
        return value


Moment = Annotated[str, Field(
    min_length=10, max_length=40, examples=["2026-01-05", "2026-01-05T02:00:00Z"],
    description="A date (the whole day in the schedule's timezone) or an RFC 3339 time "
                "(without an offset: in the schedule's timezone).")]


class BackfillCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Moment
    end: Moment
    max_active: Annotated[int, Field(ge=1, le=100,
                                     description="Runs of this backfill active at once.")] = 2

    @field_validator("start", "end")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_moment(value, "UTC", end=False)
        return value


def parse_moment(value: str, timezone: str, *, end: bool) -> datetime:
    """A date → its first (or, for `end`, last) instant in `timezone`; a time as given."""
    try:
        moment = _parse_moment(value, timezone, end=end)
    except OverflowError:
        raise ValueError(f"{value!r} is outside the years 1970 to 2999") from None
    if not 1970 <= moment.year <= 2999:
        raise ValueError(f"{value!r} is outside the years 1970 to 2999")
    return moment


def _parse_moment(value: str, timezone: str, *, end: bool) -> datetime:
    if len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date like 2026-01-05") from None
        first, last = day_bounds(day, timezone)
        return last if end else first
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time like 2026-01-05T02:00:00Z") from None
    if moment.tzinfo is None:
        moment = datetime.combine(moment.date(), time(moment.hour, moment.minute, moment.second,
                                                      moment.microsecond), zone_of(timezone))
    return moment


class BackfillRun(BaseModel):
    scheduled_for: datetime
    job_id: str | None = Field(description="Null while the tick waits for a free slot.")
    status: str | None = Field(description="The run's job status; null while it waits, "
                                           "`Deleted` once history limits removed it.")


class BackfillPublic(BaseModel):
    backfill_id: str
    start: datetime
    end: datetime
    max_active: int
    scheduled_for: list[datetime] = Field(
        description="The ticks this backfill took (on create: only those that had no run yet).")
    runs: list[BackfillRun]
    created_at: datetime

    @classmethod
    def of(cls, view: BackfillView) -> BackfillPublic:
        backfill = view.backfill
        runs = [BackfillRun(scheduled_for=tick.scheduled_for, job_id=tick.job_id,
                            status=status or ("Deleted" if tick.job_id else None))
                for tick, status in view.runs]
        return cls(backfill_id=backfill.id, start=backfill.start, end=backfill.end,
                   max_active=backfill.max_active, scheduled_for=view.taken, runs=runs,
                   created_at=backfill.created_at)
