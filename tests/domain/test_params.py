"""The schema of `source` says which reader options each format takes, exactly as the
validator decides (both come from READER_OPTIONS)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.domain.params import READER_OPTIONS, RELATIVE_PATH_PATTERN, Source, check_relative_path

VALIDATOR = jsonschema_rs.validator_for(Source.model_json_schema())
KEYS = [*sorted({key for options in READER_OPTIONS.values() for key in options}), "nope"]
VALUES = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), st.none(),
                   st.text(max_size=70), st.lists(st.integers(), max_size=2))


def accepted(body: dict[str, Any]) -> bool:
    try:
        Source.model_validate(body)
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(format_=st.sampled_from([None, "csv", "jsonl", "parquet", "xml"]),
       options=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_the_schema_accepts_exactly_the_options_the_validator_accepts(
    format_: str | None, options: dict[str, Any],
) -> None:
    body: dict[str, Any] = {"path": "in/*.csv", "options": options}
    if format_ is not None:
        body["format"] = format_
    assert VALIDATOR.is_valid(body) == accepted(body), body


def test_each_format_names_its_options_in_the_schema() -> None:
    branches = Source.model_json_schema()["oneOf"]
    named = {b["properties"]["format"]["const"]: b["properties"]["options"] for b in branches}
    assert set(named) == set(READER_OPTIONS)
    for format_, schema in named.items():
        assert set(schema["properties"]) == set(READER_OPTIONS[format_])
        assert schema["additionalProperties"] is False


def test_an_unknown_option_is_refused_with_the_allowed_ones_named() -> None:
    try:
        Source.model_validate({"path": "a.csv", "options": {"hedaer": True}})
    except ValidationError as exc:
        assert "option 'hedaer' is not supported for csv; allowed: all_varchar" in str(exc)
    else:
        raise AssertionError("an unknown option was accepted")


@settings(max_examples=500, deadline=None)
@given(path=st.text(alphabet="ab~./\\*\x00", min_size=1, max_size=10))
def test_the_source_path_pattern_matches_exactly_the_paths_the_validator_accepts(
    path: str,
) -> None:
    try:
        check_relative_path(path)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert bool(re.fullmatch(RELATIVE_PATH_PATTERN, path)) == accepted, path
