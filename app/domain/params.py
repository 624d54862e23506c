"""What a job asks for: its source, the SQL and checks of each layer, and its limits.

These models are the contract of `params` in `POST /v1/jobs`; defaults are filled in so a stored
job always says exactly what ran. Unknown fields are refused, so a typo is a 422, not a surprise.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from app.domain.sqltypes import canonical_type

MAX_SQL_LENGTH = 100_000
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Reader options a source may pass, by format, with the type each must have. Anything else is
# refused at create time: options end up in the reader call, so they are an allowlist.
READER_OPTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "csv": {
        "header": bool,
        "delimiter": str,
        "quote": str,
        "escape": str,
        "all_varchar": bool,
        "skip": int,
        "nullstr": str,
        "dateformat": str,
        "timestampformat": str,
        "null_padding": bool,
        "ignore_errors": bool,
        "sample_size": int,
        "compression": str,
        "encoding": str,
        "strict_mode": bool,
    },
    "jsonl": {"ignore_errors": bool, "compression": str, "sample_size": int,
              "dateformat": str, "timestampformat": str},
    "parquet": {"union_by_name": bool},
}
MAX_OPTION_LENGTH = 64

# The paths `check_relative_path` accepts, as one regular expression for the API schema (a test
# keeps the two in agreement): no NUL or backslash, not absolute, not starting with '~', no '..'
# segment, and not only '.' segments. A "real" segment is anything but '', '.' and '..'.
_C = r"[^/\\\x00]"
_REAL = rf"(?:[^./\\\x00]{_C}*|\.(?:[^./\\\x00]{_C}*|\.{_C}+))"
_FIRST = rf"(?:[^./~\\\x00]{_C}*|\.(?:[^./\\\x00]{_C}*|\.{_C}+))"
RELATIVE_PATH_PATTERN = rf"^(?:{_FIRST}|\.(?:/\.?)*/{_REAL})(?:/(?:{_REAL}|\.)?)*$"
_JSON_TYPES = {bool: "boolean", int: "integer", str: "string"}


def _options_schema(format_: str) -> dict[str, Any]:
    """The JSON Schema of one format's reader options, from READER_OPTIONS (what is enforced)."""
    properties: dict[str, Any] = {}
    for key, kind in READER_OPTIONS[format_].items():
        assert isinstance(kind, type), "one JSON type per option"
        prop: dict[str, Any] = {"type": _JSON_TYPES[kind]}
        if kind is str:
            prop.update(maxLength=MAX_OPTION_LENGTH, pattern="^[^\\u0000]*$")
        properties[key] = prop
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "description": f"Reader options of {format_} sources."}


def _json_integer(value: Any) -> Any:
    """An integer as JSON Schema counts one: 3 or 3.0, never "3" or true."""
    if isinstance(value, bool | str):
        raise ValueError("Input should be a valid integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JSON_INTEGER = BeforeValidator(_json_integer)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    path: Annotated[str, Field(min_length=1, max_length=1024,
                               description="Glob relative to the landing directory.",
                               json_schema_extra={"pattern": RELATIVE_PATH_PATTERN})]
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="Reader options, e.g. header, delimiter.")
    mode: Literal["all", "new_files"] = Field(default="all", description=(
        "`all`: every matching file. `new_files` (pipelines only): the matching files no "
        "Succeeded run of the pipeline consumed, claimed when the run is created."))
    files: Annotated[list[Annotated[str, Field(min_length=1, max_length=1024)]] | None, Field(
        max_length=100_000, description=(
            "The exact files read, relative to the landing directory, instead of the glob; a "
            "`new_files` run records the files it claimed here."))] = None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """Say which options each format takes: one `oneOf` branch per format (csv when the
        format is left out), each closing its options to the keys `_known_options` allows."""
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        target["oneOf"] = [
            {"properties": {"format": {"const": format_},
                            "options": _options_schema(format_)},
             **({} if format_ == "csv" else {"required": ["format"]})}
            for format_ in READER_OPTIONS
        ]
        return schema

    @field_validator("path")
    @classmethod
    def _stays_in_landing(cls, value: str) -> str:
        check_relative_path(value)
        return value

    @field_validator("files")
    @classmethod
    def _files_stay_in_landing(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            check_relative_path(name)
        return value

    @model_validator(mode="after")
    def _known_options(self) -> Source:
        allowed = READER_OPTIONS[self.format]
        for key, val in self.options.items():
            if key not in allowed:
                raise ValueError(
                    f"option {key!r} is not supported for {self.format}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
            expected = allowed[key]
            if expected is int and isinstance(val, float) and val.is_integer():
                # JSON Schema counts 5.0 as an integer, as pydantic does for the other fields
                self.options[key] = val = int(val)
            # bool is an int in Python; an int option must not accept true/false
            if (expected is int and isinstance(val, bool)) or not isinstance(val, expected):
                name = expected.__name__ if isinstance(expected, type) else "value"
                raise ValueError(f"option {key!r} must be a {name}")
            if isinstance(val, str) and (len(val) > MAX_OPTION_LENGTH or "\x00" in val):
                raise ValueError(f"option {key!r} is too long or holds a NUL byte")
        return self


class Check(_Strict):
    name: Annotated[str, Field(pattern=IDENTIFIER.pattern,
                               description="Becomes _reject_reason of rows failing it.")]
    expr: Annotated[str, Field(min_length=1, max_length=10_000,
                               description="SQL boolean; a row passes when it is TRUE.")]


class Dedupe(_Strict):
    keys: Annotated[list[Annotated[str, Field(pattern=IDENTIFIER.pattern)]],
                    Field(min_length=1, max_length=32)]
    order_by: Annotated[
        str | None, Field(max_length=10_000, description="Which row per key is kept: the first.")
    ] = None


class Output(_Strict):
    format: Literal["parquet"] = "parquet"


class Contract(_Strict):
    """The columns and types a layer's output must have (order ignored)."""

    columns: Annotated[
        dict[Annotated[str, Field(min_length=1, max_length=255)], str],
        Field(min_length=1, max_length=1000,
              description="Column → DuckDB type name (case-insensitive; aliases such as INT, "
                          "TEXT, FLOAT8 or BOOL are resolved).")]
    on_drift: Literal["fail", "warn"] = Field(
        "fail", description="fail: the stage fails (SchemaDrift); warn: a condition and an event.")

    @field_validator("columns")
    @classmethod
    def _known_types(cls, columns: dict[str, str]) -> dict[str, str]:
        """Stored as DuckDB spells them, so the job says exactly what is compared."""
        seen: set[str] = set()
        for name in columns:
            if name.lower() in seen:
                raise ValueError(f"column {name!r} is named twice (names are case-insensitive)")
            seen.add(name.lower())
        resolved = {}
        for name, type_ in columns.items():
            try:
                resolved[name] = canonical_type(type_)
            except ValueError as exc:
                raise ValueError(f"column {name!r}: {exc}") from None
        return resolved


class Table(_Strict):
    """How a pipeline run's layer output goes into the pipeline's table (Delta Lake)."""

    mode: Literal["append", "merge", "replace_partitions"] = Field(default="append", description=(
        "`append` adds the rows; `merge` upserts by `keys` (the later commit wins); "
        "`replace_partitions` overwrites the `partition_by` partitions the run's output holds."))
    keys: Annotated[list[Annotated[str, Field(pattern=IDENTIFIER.pattern)]],
                    Field(max_length=32)] = Field(default_factory=list)
    partition_by: Annotated[list[Annotated[str, Field(pattern=IDENTIFIER.pattern)]],
                            Field(max_length=8)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _mode_has_its_columns(self) -> Table:
        if self.mode == "merge" and not self.keys:
            raise ValueError("mode 'merge' needs keys: the columns that identify a row")
        if self.mode == "replace_partitions" and not self.partition_by:
            raise ValueError("mode 'replace_partitions' needs partition_by")
        return self


class Layer(_Strict):
    sql: Annotated[str | None, Field(max_length=MAX_SQL_LENGTH,
                                     description="One SELECT over the previous layer.")] = None
    checks: Annotated[list[Check], Field(max_length=100)] = Field(default_factory=list)
    dedupe: Dedupe | None = None
    output: Output | None = None
    reject_limit: Annotated[
        float | None,
        Field(ge=0, le=1, strict=True,
              description="Largest share of rejects, rejects ÷ (rows + rejects); "
                          "more fails the stage (TooManyRejects)."),
    ] = None
    contract: Contract | None = None
    table: Table | None = Field(default=None, description=(
        "Pipelines only: each Succeeded run commits this layer's output into the pipeline's "
        "table."))

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, checks: list[Check]) -> list[Check]:
        names = [c.name for c in checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"check names must be unique; repeated: {', '.join(dupes)}")
        return checks


class Layers(_Strict):
    ods: Layer = Field(default_factory=Layer)
    dwd: Layer = Field(default_factory=Layer)
    dws: Layer = Field(default_factory=Layer)
    ds: Layer = Field(default_factory=lambda: Layer(output=Output()))

    def get(self, layer: str) -> Layer:
        value = getattr(self, layer)
        assert isinstance(value, Layer)
        return value


class JobParams(_Strict):
    source: Source
    layers: Layers = Field(default_factory=Layers)
    timeout_seconds: Annotated[int, Field(ge=1, le=7 * 86400), JSON_INTEGER] = 3600
    stage_timeout_seconds: Annotated[int, Field(ge=1, le=7 * 86400), JSON_INTEGER] = 900
    retries: Annotated[int, Field(ge=0, le=20), JSON_INTEGER] = 3
    batch_size: Annotated[int, Field(ge=1_000, le=10_000_000,
                                     description="Parquet row-group size."), JSON_INTEGER] = 100_000
    concurrency: Annotated[int, Field(ge=1, le=64, description="Engine threads per stage."),
                           JSON_INTEGER] = 2
    idempotent: bool = Field(default=True, strict=True)


def check_relative_path(value: str) -> PurePosixPath:
    """Refuse a path that could leave the directory it is relative to."""
    if "\x00" in value or "\\" in value:
        raise ValueError("path must not contain NUL bytes or backslashes")
    path = PurePosixPath(value)
    if path.is_absolute() or value.startswith("~"):
        raise ValueError("path must be relative to the landing directory")
    if any(part == ".." for part in path.parts):
        raise ValueError("path must not contain '..'")
    if not path.parts or str(path) == ".":
        raise ValueError("path must name a file or a glob")
    return path
