"""The async engine and sessions, with SQLite made fit for a concurrent service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def asyncpg_dsn(database_url: str) -> str | None:
    """The URL as asyncpg itself takes it (for connections outside SQLAlchemy); None if not
    PostgreSQL."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the engine; on SQLite turn on WAL, foreign keys and a busy timeout."""
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # a fixed pool: overflow connections are opened and closed again under every burst, and an
    # asyncpg connect costs milliseconds of CPU; waiting for a pooled one is cheaper
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 0)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def create_read_engine(url: str) -> AsyncEngine:
    """A second, small pool for the API's hot reads: autocommit and no pre-ping.

    A read then costs one round trip instead of four (ping, BEGIN, SELECT, ROLLBACK); a
    connection the server dropped is detected on use instead, and `read_retrying` retries the
    read once on a fresh one. It also keeps polling clients from queueing behind the watcher.
    """
    if is_sqlite(url):
        return create_engine(url, isolation_level="AUTOCOMMIT")
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_size=10, pool_pre_ping=False)


T = TypeVar("T")
C = TypeVar("C")


async def read_retrying(
    open_: Callable[[], AbstractAsyncContextManager[C]], read: Callable[[C], Awaitable[T]]
) -> T:
    """Run a read-only query on what `open_` gives (a connection or a session of the read
    pool); once more on a new one if the first connection was dead."""
    try:
        async with open_() as conn:
            return await read(conn)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    async with open_() as conn:
        return await read(conn)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error."""
    async with sessions() as session, session.begin():
        yield session
