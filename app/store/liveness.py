"""A pool checkout that asks the driver whether the connection is alive instead of the server.

SQLAlchemy's pre-ping on asyncpg costs three round trips at every checkout (BEGIN, an empty
query, ROLLBACK) — at a transaction per hop, a tenth of the service's CPU. asyncpg marks a
connection closed as soon as the server ends it (a restart, `pg_terminate_backend`, an idle
timeout), so that flag catches the dropped connections the ping was there for, and raising
`DisconnectionError` makes the pool throw the connection away and check out another. A
connection lost without the server saying so fails on first use, as it would after a ping.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine


def check_liveness_locally(engine: AsyncEngine) -> AsyncEngine:
    """Turn the pool's liveness check into a look at the driver's flag; returns `engine`."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _alive(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "_connection", None)
        is_closed = getattr(driver, "is_closed", None)
        if callable(is_closed) and is_closed():
            raise DisconnectionError("the server closed this connection")

    return engine

