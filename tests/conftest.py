"""Shared fixtures: one isolated, migrated database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.store.db import create_engine, session_factory
from tests.databases import BACKENDS, PostgresDatabases, SqliteDatabases
from tests.orders_data import EXAMPLES


@pytest.fixture(scope="session")
def sqlite_databases(tmp_path_factory: pytest.TempPathFactory) -> SqliteDatabases:
    dbs = SqliteDatabases(tmp_path_factory.mktemp("sqlite-template"))
    dbs.setup()
    return dbs


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    dbs = PostgresDatabases()
    dbs.setup()
    yield dbs
    dbs.teardown()


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_databases: SqliteDatabases
) -> Iterator[str]:
    """A freshly migrated database of its own for this test (parametrised over both backends)."""
    if request.param == "sqlite":
        yield sqlite_databases.new(tmp_path)
        return
    pg: PostgresDatabases = request.getfixturevalue("postgres_databases")
    url = pg.new()
    yield url
    pg.drop(url)


@pytest.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(db_engine)


@pytest.fixture
def landing_dir(tmp_path: Path) -> Path:
    path = tmp_path / "landing"
    path.mkdir()
    return path


@pytest.fixture
def warehouse_dir(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse"
    path.mkdir()
    return path


@pytest.fixture
def orders_job() -> dict[str, Any]:
    """The sample job of the product: dirty orders → daily revenue per region."""
    return dict(json.loads((EXAMPLES / "orders_job.json").read_text()))
