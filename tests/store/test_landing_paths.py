"""The landing path pattern in the API schema is exactly the set of names the store accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.domain.errors import LandingPathRefused
from app.store.landing import LANDING_PATH_PATTERN, confined_path

PATTERN = re.compile(LANDING_PATH_PATTERN)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("landing")


def accepted(root: Path, relative: str) -> bool:
    try:
        confined_path(root, relative)
    except LandingPathRefused:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(relative=st.text(alphabet="ab~./\\*?[]\x00é", max_size=10))
@example('orders/2026-01-05.csv')
@example('a//b')
@example('a/./b')
@example('./a')
@example('a/')
@example('~a')
@example('a/~b')
@example('.hidden')
@example('a/..')
@example('')
def test_the_pattern_matches_exactly_the_paths_the_store_accepts(root: Path,
                                                                 relative: str) -> None:
    assert bool(PATTERN.fullmatch(relative)) == accepted(root, relative), relative


@pytest.mark.parametrize("relative", ["a" * 255, "a" * 256, "a/" + "é" * 255, "b/" + "é" * 256,
                                      "a" * 200 + "/" + "b" * 200, "a/" * 511 + "b"])
def test_long_names_agree_with_the_pattern(root: Path, relative: str) -> None:
    assert bool(PATTERN.fullmatch(relative)) == accepted(root, relative), relative


def test_a_path_past_the_documented_length_is_refused(root: Path) -> None:
    assert not accepted(root, "a/" * 600)
