"""Fixtures of the engine tests: a landing and a warehouse folder, and a way to run one stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executor.engine.stages import DATABASE_PATHS, StageRunner, duckdb_engine


@pytest.fixture(params=DATABASE_PATHS)
def runner(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StageRunner]:
    """A job's folders and the engine, once per database path (shared and fresh)."""
    landing = tmp_path / "landing"
    warehouse = tmp_path / "warehouse"
    landing.mkdir()
    warehouse.mkdir()
    engine = duckdb_engine(request.param)
    yield StageRunner(landing.resolve(), warehouse.resolve(), engine)
    engine.close()


@pytest.fixture
def no_leftovers(runner: StageRunner) -> Iterator[None]:
    """The test must leave no temporary folder in the warehouse."""
    yield
    assert not list(runner.warehouse.rglob(".tmp-*"))
