"""The job GET's read on the bare driver: one primary-key lookup, without SQLAlchemy's layers.

Through SQLAlchemy's async connection the lookup costs ~0.4 ms of CPU on asyncpg and ~0.9 ms on
aiosqlite (its hop to a worker thread and back): several times a whole trivial request. On the
driver it costs a tenth of that. Nothing is cached: every read is a fresh autocommit statement
against the committed state, so a write on another replica is visible to the next read as before.

- PostgreSQL: up to ten asyncpg connections of its own, the statements prepared once on each.
- SQLite in WAL mode: one `sqlite3` connection used on the event loop itself. A WAL reader never
  waits for a writer, and the lookup (~10 µs) is cheaper than any hop to a thread. Its busy
  timeout is 0, so in the rare moments a reader must wait (recovery, a checkpoint resetting the
  log) the read gives up at once instead of blocking the loop, and the caller reads through the
  pooled path.

A reader that cannot answer raises `ReadUnavailable`; it never answers wrongly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, overload

import asyncpg
from sqlalchemy.engine import make_url

from app.store.db import asyncpg_dsn, is_sqlite


class StoredJob(NamedTuple):
    """The columns a job's public document is built from, converted as the ORM converts them."""

    id: str
    name: str
    description: str | None
    owner: str
    status: str
    suspend: bool
    params: dict[str, Any]
    results: dict[str, Any]
    conditions: list[dict[str, Any]]
    attempt: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    pipeline: dict[str, Any] | None


_COLUMNS = ", ".join(StoredJob._fields)
_PG_BY_ID = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1"
_PG_BY_ID_AND_OWNER = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND owner = $2"
_SQLITE_BY_ID = f"SELECT {_COLUMNS} FROM jobs WHERE id = ?"
_SQLITE_BY_ID_AND_OWNER = f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND owner = ?"


class ReadUnavailable(Exception):
    """The fast path cannot answer this read now; read through the pooled path instead."""


class JobReader(Protocol):
    async def read(self, job_id: str, owner: str | None) -> StoredJob | None: ...

    async def close(self) -> None: ...


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: None) -> None: ...
def _aware(value: datetime | None) -> datetime | None:
    """As `UTCDateTime` returns it: aware, in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@overload
def _sqlite_time(value: str) -> datetime: ...
@overload
def _sqlite_time(value: None) -> None: ...
def _sqlite_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


_DROPPED = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError)
"""What a connection the server closed raises on its next use."""


class _Connection(NamedTuple):
    conn: asyncpg.Connection
    by_id: asyncpg.prepared_stmt.PreparedStatement
    by_id_and_owner: asyncpg.prepared_stmt.PreparedStatement


class PostgresJobReader:
    """Reads on connections of its own, each with both statements prepared once.

    Not asyncpg's pool: its acquire/release bookkeeping (and by default a reset round trip on
    every release) costs more than the lookup. A semaphore bounds the connections; a connection
    whose read failed is closed rather than reused.
    """

    def __init__(self, dsn: str, max_size: int = 10) -> None:
        self.dsn = dsn
        self._slots = asyncio.Semaphore(max_size)
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        conn = await asyncpg.connect(self.dsn)
        try:
            return _Connection(conn, await conn.prepare(_PG_BY_ID),
                               await conn.prepare(_PG_BY_ID_AND_OWNER))
        except BaseException:
            conn.terminate()
            raise

    async def _fetch(self, job_id: str, owner: str | None) -> asyncpg.Record | None:
        async with self._slots:
            held = self._idle.pop() if self._idle else await self._connect()
            try:
                if owner is None:
                    row = await held.by_id.fetchrow(job_id)
                else:
                    row = await held.by_id_and_owner.fetchrow(job_id, owner)
            except BaseException:
                held.conn.terminate()
                raise
            self._idle.append(held)
            return row

    async def read(self, job_id: str, owner: str | None) -> StoredJob | None:
        for attempt in (1, 2):
            try:
                row = await self._fetch(job_id, owner)
                break
            except _DROPPED as exc:  # the server dropped connections: likely all the idle ones
                self._close_idle()
                if attempt == 2:
                    raise ReadUnavailable(str(exc)) from exc
            except Exception as exc:  # anything else: the pooled path reads it, or reports it
                raise ReadUnavailable(str(exc)) from exc
        if row is None:
            return None
        return StoredJob(
            row[0], row[1], row[2], row[3], row[4], row[5], _json(row[6]), _json(row[7]),
            _json(row[8]), row[9], _aware(row[10]), _aware(row[11]), _aware(row[12]),
            _aware(row[13]), _json(row[14]),
        )

    def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for held in idle:
            held.conn.terminate()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for held in idle:
            try:
                await held.conn.close(timeout=2)
            except Exception:
                held.conn.terminate()


class SqliteJobReader:
    """Reads with one `sqlite3` connection on the event loop, opened by the first read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
                if str(mode).lower() != "wal":  # readers would wait for writers: not on the loop
                    raise ReadUnavailable(f"journal mode {mode}")
                conn.execute("PRAGMA query_only=ON")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def read(self, job_id: str, owner: str | None) -> StoredJob | None:
        try:
            conn = self._connection()
            if owner is None:
                rows = conn.execute(_SQLITE_BY_ID, (job_id,)).fetchall()
            else:
                rows = conn.execute(_SQLITE_BY_ID_AND_OWNER, (job_id, owner)).fetchall()
        except sqlite3.Error as exc:  # busy, locked, not migrated yet: the pooled path decides
            raise ReadUnavailable(str(exc)) from exc
        if not rows:
            return None
        row = rows[0]
        return StoredJob(
            row[0], row[1], row[2], row[3], row[4], bool(row[5]), _json(row[6]), _json(row[7]),
            _json(row[8]), row[9], _sqlite_time(row[10]), _sqlite_time(row[11]),
            _sqlite_time(row[12]), _sqlite_time(row[13]), _json(row[14]),
        )

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(sqlite3.ProgrammingError):  # opened on another thread
                conn.close()


def create_job_reader(database_url: str) -> JobReader | None:
    """The fast reader for this database, or None where there is none (in-memory SQLite)."""
    if is_sqlite(database_url):
        url = make_url(database_url)
        path = url.database
        if not path or path == ":memory:" or url.query.get("mode") == "memory":
            return None
        return SqliteJobReader(path)
    dsn = asyncpg_dsn(database_url)
    return PostgresJobReader(dsn) if dsn else None
