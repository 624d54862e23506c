"""A pipeline: a named, versioned job template of one owner, and the run parameters it declares.

A run's values are checked against the declared types when the run is created; then `{name}` in
`source.path` is formatted (and the result checked again, so a value can never lead the path out
of the landing directory), while SQL, checks and `order_by` keep `$name`, which the engine binds as
a typed value. Every run also has `run_time` (its tick, or a manual run's creation time) and
`run_date` (that time's date in the schedule's timezone).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.domain.errors import DomainError
from app.domain.parameters import PARAMETER_NAME, ParameterType, TypedValue
from app.domain.params import JSON_INTEGER, JobParams, check_relative_path
from app.domain.schedule import Schedule, run_date

PIPELINE_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
BUILTINS = ("run_time", "run_date")
# `{day}` and `{day:%Y/%m/%d}`; never attribute or index access (`{day.__class__}`)
_FORMAT_SPEC = re.compile(r"^[%A-Za-z0-9_./:-]{0,32}$")
_NAME = re.compile(PARAMETER_NAME)
_GLOB = re.compile(r"[*?\[\]{}]")
# a date or timestamp default may name a built-in: the run's own date or time, unless given
BUILTIN_DEFAULTS = {"date": "{run_date}", "timestamp": "{run_time}"}

Trigger = Literal["manual", "schedule", "backfill"]


class ParameterDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ParameterType
    default: Any = Field(default=None, description=(
        "Used when a run does not give the parameter; a date may default to \"{run_date}\", a "
        "timestamp to \"{run_time}\"."))
    pattern: Annotated[str | None, Field(
        max_length=500, description="A string's value must match it fully.")] = None
    description: Annotated[str | None, Field(max_length=1000)] = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _default_fits(self) -> ParameterDecl:
        if self.pattern is not None and self.type != "string":
            raise ValueError("pattern applies to string parameters only")
        if self.default is not None and self.default != BUILTIN_DEFAULTS.get(self.type):
            coerce(self, self.default)  # raises ValueError naming what is wrong
        return self


class History(BaseModel):
    model_config = ConfigDict(extra="forbid")

    succeeded: Annotated[int, Field(ge=0, le=10_000), JSON_INTEGER] = 10
    failed: Annotated[int, Field(ge=0, le=10_000,
                                 description="Failed and Cancelled runs kept."), JSON_INTEGER] = 5


class PipelineSpec(BaseModel):
    """The body of `PUT /v1/pipelines/{name}`: everything a version is made of."""

    model_config = ConfigDict(extra="forbid")

    description: Annotated[str | None, Field(max_length=4000)] = None
    params: JobParams
    parameters: Annotated[dict[str, ParameterDecl], Field(max_length=64)] = Field(
        default_factory=dict)
    schedule: Schedule | None = None
    history: History = Field(default_factory=History)

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: dict[str, ParameterDecl]) -> dict[str, ParameterDecl]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"parameter name {name!r} must match {PARAMETER_NAME}")
            if name in BUILTINS:
                raise ValueError(f"{name} is built in; it cannot be declared")
        return value

    @model_validator(mode="after")
    def _scheduled_runs_have_every_value(self) -> PipelineSpec:
        if self.schedule is not None:
            needed = sorted(n for n, d in self.parameters.items() if d.default is None)
            if needed:
                raise ValueError(f"a scheduled pipeline needs a default for every parameter; "
                                 f"none for: {', '.join(needed)}")
        return self

    @model_validator(mode="after")
    def _path_uses_known_parameters(self) -> PipelineSpec:
        known = set(self.parameters) | set(BUILTINS)
        for name, _spec in path_fields(self.params.source.path):
            if name not in known:
                raise ValueError(f"source.path uses {{{name}}}, which is not a declared parameter")
        return self

    def digest(self) -> str:
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    @property
    def timezone(self) -> str:
        return self.schedule.timezone if self.schedule else "UTC"


def path_fields(path: str) -> list[tuple[str, str]]:
    """The `{name}` / `{name:spec}` fields of a path template; ValueError on anything else."""
    fields: list[tuple[str, str]] = []
    try:
        parsed = list(string.Formatter().parse(path))
    except ValueError as exc:
        raise ValueError(f"source.path is not a valid template: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not _NAME.match(name) or conversion or not _FORMAT_SPEC.match(spec or ""):
            raise ValueError(f"source.path field {{{name}}} must be a plain parameter name, "
                             "optionally with a date format like {day:%Y/%m/%d}")
        fields.append((name, spec or ""))
    return fields


# --- run parameters ---------------------------------------------------------------------------


class ParameterProblem(DomainError):
    """Run parameters that do not fit the declaration: each problem names its parameter."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def coerce(decl: ParameterDecl, value: Any) -> Any:
    """The JSON value of `value` as `decl.type`; strings are parsed (the CLI sends strings)."""
    kind = decl.type
    if value is None:
        raise ValueError("must not be null")
    if kind == "string":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if len(value) > 1000 or "\x00" in value:
            raise ValueError("is too long or holds a NUL byte")
        if decl.pattern is not None and not re.fullmatch(decl.pattern, value):
            raise ValueError(f"{value!r} does not match {decl.pattern}")
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError("must be a boolean")
    if kind == "integer":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError("must be an integer") from None
    if kind == "number":
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError("must be a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return int(number) if isinstance(value, int) else number
    if kind == "date":
        if not isinstance(value, str):
            raise ValueError("must be a date like 2026-01-05")
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError("must be a date like 2026-01-05") from None
    if not isinstance(value, str):
        raise ValueError("must be a timestamp like 2026-01-05T02:00:00Z")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a timestamp like 2026-01-05T02:00:00Z") from None
    return _iso(moment)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def resolve_parameters(
    spec: PipelineSpec, given: Mapping[str, Any], run_time: datetime
) -> dict[str, TypedValue]:
    """The run's typed values: declared ones from `given` or their defaults, and the built-ins.

    Raises ParameterProblem naming every missing, unknown or mistyped parameter.
    """
    problems: list[tuple[str, str]] = []
    builtins = {
        "run_time": TypedValue(type="timestamp", value=_iso(run_time)),
        "run_date": TypedValue(type="date",
                               value=run_date(run_time, spec.timezone).isoformat()),
    }
    for name in given:
        if name in BUILTINS:
            problems.append((f"parameters.{name}", f"{name} is set by the run, not given"))
        elif name not in spec.parameters:
            declared = ", ".join(sorted(spec.parameters)) or "none"
            problems.append((f"parameters.{name}", f"unknown parameter (declared: {declared})"))
    values: dict[str, TypedValue] = {}
    for name, decl in spec.parameters.items():
        if name in given:
            raw = given[name]
        elif decl.default is not None and decl.default == BUILTIN_DEFAULTS.get(decl.type):
            values[name] = builtins["run_date" if decl.type == "date" else "run_time"]
            continue
        elif decl.default is not None:
            raw = decl.default
        else:
            problems.append((f"parameters.{name}", f"missing: a {decl.type} is required"))
            continue
        try:
            values[name] = TypedValue(type=decl.type, value=coerce(decl, raw))
        except ValueError as exc:
            problems.append((f"parameters.{name}", str(exc)))
    if problems:
        raise ParameterProblem(problems)
    return {**values, **builtins}


def render_params(spec: PipelineSpec, values: Mapping[str, TypedValue]) -> JobParams:
    """The run's params: `{name}` in `source.path` formatted; the result confined again."""
    template = spec.params.source.path
    python = {name: typed.to_python() for name, typed in values.items()}
    for name, _spec in path_fields(template):
        text = str(python.get(name, ""))
        if _GLOB.search(text):
            raise ParameterProblem([(f"parameters.{name}",
                                     "a value used in source.path must not hold glob characters")])
        if text.startswith(("/", "~")) or ".." in PurePosixPath(text).parts or "\x00" in text:
            raise ParameterProblem([(f"parameters.{name}",
                                     "a value used in source.path must stay inside the landing "
                                     "directory (no '..', no leading '/')")])
    try:
        path = template.format_map(python) if path_fields(template) else template
        check_relative_path(path)
    except (ValueError, KeyError) as exc:
        raise ParameterProblem([("params.source.path",
                                 f"formatted with the run's parameters, {template!r} is refused: "
                                 f"{exc}")]) from None
    document = spec.params.model_dump(mode="json")
    document["source"]["path"] = path
    try:
        return JobParams.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ParameterProblem([("params.source.path", str(first.get("msg")))]) from None


def to_json(values: Mapping[str, TypedValue]) -> dict[str, Any]:
    return {name: typed.model_dump(mode="json") for name, typed in values.items()}


class PipelineNotFound(DomainError):
    def __init__(self, name: str) -> None:
        super().__init__(f"pipeline {name!r} not found")
        self.name = name


class BackfillNotFound(DomainError):
    def __init__(self, backfill_id: str) -> None:
        super().__init__(f"backfill {backfill_id} not found")
        self.backfill_id = backfill_id


class BackfillRefused(DomainError):
    """A backfill that cannot be made: no schedule, an empty or too long range."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
