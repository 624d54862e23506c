"""Isolated, migrated databases for tests: a SQLite file or a PostgreSQL database per test.

PostgreSQL databases are copied from a template migrated once per session, so each test gets its
own schema in tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from app.store.migrate import upgrade

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""Parameters of the database fixtures: every database test runs on both."""

PG_ADMIN_DSN = os.environ.get("STRATA_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T = TypeVar("T")


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is running."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())  # type: ignore[arg-type]
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def pg_url(name: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class PostgresDatabases:
    def __init__(self) -> None:
        self.template = f"strata_tpl_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def setup(self) -> None:
        run_sync(lambda: _admin(f'CREATE DATABASE "{self.template}"'))
        upgrade(pg_url(self.template))

    def new(self) -> str:
        name = f"strata_t_{uuid.uuid4().hex[:10]}"
        run_sync(lambda: _admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return pg_url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        run_sync(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def teardown(self) -> None:
        for name in [*self.created, self.template]:
            run_sync(lambda n=name: _admin(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))


class SqliteDatabases:
    def __init__(self, root: Path) -> None:
        self.template = root / "template.db"

    def setup(self) -> None:
        upgrade(f"sqlite+aiosqlite:///{self.template}")

    def new(self, folder: Path) -> str:
        target = folder / "strata.db"
        shutil.copyfile(self.template, target)
        return f"sqlite+aiosqlite:///{target}"
