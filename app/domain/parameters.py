"""Typed run parameters as they travel from a job to the engine that binds them.

A pipeline declares its parameters with a type; a run's values are checked against those types
when the run is created, stored as JSON, and sent to the executor as `{name: {type, value}}`.
The executor turns each back into the Python value DuckDB or Spark binds as `$name`, so a value is
always data, never SQL text.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ParameterType = Literal["string", "integer", "number", "boolean", "date", "timestamp"]
PARAMETER_NAME = r"^[a-z_][a-z0-9_]{0,62}$"


class TypedValue(BaseModel):
    """One bound parameter on the wire: its declared type and its JSON value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ParameterType
    value: Any = Field(description="JSON form: dates and timestamps as ISO 8601 strings.")

    def to_python(self) -> Any:
        """The value an engine binds: a date is a `date`, a timestamp an aware `datetime`."""
        return to_python(self.type, self.value)


def to_python(kind: ParameterType, value: Any) -> Any:
    if value is None:
        return None
    if kind == "date":
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    if kind == "timestamp":
        return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    if kind == "boolean":
        return bool(value)
    return str(value)


def bind_values(parameters: dict[str, TypedValue]) -> dict[str, Any]:
    """Name → Python value, ready for `con.execute(sql, values)`."""
    return {name: typed.to_python() for name, typed in parameters.items()}
