"""Fixtures of the engine tests: a landing and a warehouse folder, and a way to run one stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executor.engine.stages import StageRunner


@pytest.fixture
def runner(tmp_path: Path) -> StageRunner:
    landing = tmp_path / "landing"
    warehouse = tmp_path / "warehouse"
    landing.mkdir()
    warehouse.mkdir()
    return StageRunner(landing.resolve(), warehouse.resolve())


@pytest.fixture
def no_leftovers(runner: StageRunner) -> Iterator[None]:
    """The test must leave no temporary folder in the warehouse."""
    yield
    assert not list(runner.warehouse.rglob(".tmp-*"))
