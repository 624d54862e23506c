"""Run parameters: typed, checked against the declaration, formatted into the path safely."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.domain.parameters import TypedValue, bind_values
from app.domain.pipelines import (
    ParameterProblem,
    PipelineSpec,
    render_params,
    resolve_parameters,
)

RUN_TIME = datetime(2026, 1, 5, 23, 30, tzinfo=UTC)


def spec(path: str = "orders/{day}/*.csv", **parameters: Any) -> PipelineSpec:
    declared = parameters or {
        "day": {"type": "date"},
        "region": {"type": "string", "default": "eu", "pattern": "^[a-z]+$"},
        "limit": {"type": "integer", "default": 10},
        "ratio": {"type": "number", "default": 0.5},
        "strict": {"type": "boolean", "default": False},
        "since": {"type": "timestamp", "default": "2026-01-01T00:00:00Z"},
    }
    return PipelineSpec.model_validate({
        "params": {"source": {"path": path, "format": "csv"}},
        "parameters": declared,
        "schedule": None,
    })


def test_values_are_typed_defaults_filled_and_builtins_added() -> None:
    values = resolve_parameters(spec(), {"day": "2026-01-05", "limit": "25", "strict": "true"},
                                RUN_TIME)
    assert values["day"] == TypedValue(type="date", value="2026-01-05")
    assert values["limit"] == TypedValue(type="integer", value=25)
    assert values["strict"] == TypedValue(type="boolean", value=True)
    assert values["region"] == TypedValue(type="string", value="eu")
    assert values["run_time"] == TypedValue(type="timestamp", value="2026-01-05T23:30:00Z")
    assert values["run_date"] == TypedValue(type="date", value="2026-01-05")
    bound = bind_values(values)
    assert bound["day"].isoformat() == "2026-01-05" and bound["ratio"] == 0.5


@pytest.mark.parametrize(("given", "field", "message"), [
    ({}, "parameters.day", "missing"),
    ({"day": "2026-01-05", "color": "red"}, "parameters.color", "unknown parameter"),
    ({"day": "yesterday"}, "parameters.day", "must be a date"),
    ({"day": "2026-01-05", "limit": "ten"}, "parameters.limit", "must be an integer"),
    ({"day": "2026-01-05", "limit": True}, "parameters.limit", "must be an integer"),
    ({"day": "2026-01-05", "ratio": "NaN"}, "parameters.ratio", "finite"),
    ({"day": "2026-01-05", "strict": "perhaps"}, "parameters.strict", "must be a boolean"),
    ({"day": "2026-01-05", "region": "EU'; DROP"}, "parameters.region", "does not match"),
    ({"day": "2026-01-05", "since": "soon"}, "parameters.since", "must be a timestamp"),
    ({"day": "2026-01-05", "run_date": "2026-01-01"}, "parameters.run_date", "set by the run"),
])
def test_a_bad_value_is_refused_naming_the_parameter(
    given: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ParameterProblem) as caught:
        resolve_parameters(spec(), given, RUN_TIME)
    fields = dict(caught.value.problems)
    assert field in fields and message in fields[field], fields


def test_the_path_is_formatted_after_validation_and_stays_in_the_landing_dir() -> None:
    pipeline = spec("orders/{day:%Y/%m/%d}/{region}-*.csv")
    values = resolve_parameters(pipeline, {"day": "2026-01-05"}, RUN_TIME)
    assert render_params(pipeline, values).source.path == "orders/2026/01/05/eu-*.csv"


@pytest.mark.parametrize("value", ["../../etc", "/etc/passwd", "*", "a/../../b", "x{y}"])
def test_a_value_that_would_leave_or_widen_the_path_is_refused(value: str) -> None:
    pipeline = spec("{where}/*.csv", where={"type": "string"})
    values = resolve_parameters(pipeline, {"where": value}, RUN_TIME)
    with pytest.raises(ParameterProblem) as caught:
        render_params(pipeline, values)
    assert caught.value.problems[0][0] in ("params.source.path", "parameters.where")


@pytest.mark.parametrize(("path", "parameters", "message"), [
    ("orders/{color}/*.csv", {}, "not a declared parameter"),
    ("orders/{day.__class__}/*.csv", {"day": {"type": "date"}}, "plain parameter name"),
    ("orders/{day!r}/*.csv", {"day": {"type": "date"}}, "plain parameter name"),
    ("orders/{day/*.csv", {"day": {"type": "date"}}, "not a valid template"),
    ("x.csv", {"run_date": {"type": "date"}}, "built in"),
    ("x.csv", {"n": {"type": "integer", "default": "many"}}, "must be an integer"),
    ("x.csv", {"n": {"type": "integer", "pattern": "^1$"}}, "string parameters only"),
])
def test_a_bad_declaration_is_refused_at_put(
    path: str, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(path, **parameters) if parameters else spec(path, x={"type": "string"})


def test_a_scheduled_pipeline_needs_a_default_for_every_parameter() -> None:
    body = {"params": {"source": {"path": "x.csv"}}, "parameters": {"day": {"type": "date"}},
            "schedule": {"interval_seconds": 60}}
    with pytest.raises(ValidationError, match="none for: day"):
        PipelineSpec.model_validate(body)
    body["parameters"] = {"day": {"type": "date", "default": "{run_date}"}}
    pipeline = PipelineSpec.model_validate(body)
    values = resolve_parameters(pipeline, {}, RUN_TIME)
    assert values["day"] == TypedValue(type="date", value="2026-01-05")


def test_the_digest_ignores_key_order_but_not_content() -> None:
    assert spec().digest() == spec().digest()
    assert spec().digest() != spec("other/{day}.csv").digest()
