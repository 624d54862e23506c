"""Typed run parameters: the JSON form on the wire and the Python value an engine binds."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from app.domain.parameters import TypedValue, bind_values, to_python


@pytest.mark.parametrize(
    ("kind", "wire", "expected"),
    [
        ("string", "eu", "eu"),
        ("string", 7, "7"),
        ("integer", 42, 42),
        ("integer", "42", 42),
        ("number", 2, 2.0),
        ("number", "0.5", 0.5),
        ("boolean", True, True),
        ("date", "2026-01-05", date(2026, 1, 5)),
        ("timestamp", "2026-01-05T02:00:00+01:00",
         datetime(2026, 1, 5, 2, tzinfo=timezone(timedelta(hours=1)))),
        ("timestamp", "2026-01-05T01:00:00Z", datetime(2026, 1, 5, 1, tzinfo=UTC)),
    ],
)
def test_a_wire_value_becomes_the_python_value_of_its_type(
    kind: Any, wire: Any, expected: Any
) -> None:
    value = TypedValue(type=kind, value=wire).to_python()

    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("kind", ["string", "integer", "number", "boolean", "date", "timestamp"])
def test_null_stays_null_whatever_the_type(kind: Any) -> None:
    assert to_python(kind, None) is None


def test_values_already_in_python_form_pass_through() -> None:
    day, moment = date(2026, 1, 5), datetime(2026, 1, 5, tzinfo=UTC)

    assert to_python("date", day) is day and to_python("timestamp", moment) is moment


def test_bind_values_maps_every_name_to_its_python_value() -> None:
    parameters = {"day": TypedValue(type="date", value="2026-01-05"),
                  "region": TypedValue(type="string", value="eu")}

    assert bind_values(parameters) == {"day": date(2026, 1, 5), "region": "eu"}
    assert bind_values({}) == {}


@pytest.mark.parametrize(
    "wire",
    [{"type": "uuid", "value": "x"}, {"type": "string", "value": "x", "extra": 1}, {"value": 1}],
)
def test_an_unknown_type_or_field_is_refused(wire: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TypedValue.model_validate(wire)


def test_a_typed_value_round_trips_through_json() -> None:
    typed = TypedValue(type="date", value="2026-01-05")

    assert TypedValue.model_validate_json(typed.model_dump_json()) == typed
