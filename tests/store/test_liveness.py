"""The write pool checks a connection's liveness with the driver's own flag, not a round trip:
a connection the server ended is never handed out."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.store.db import create_engine
from app.store.liveness import check_liveness_locally

TERMINATE = "SELECT pg_terminate_backend(:pid)"


async def test_a_connection_the_server_ended_is_replaced_at_checkout(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a server that ends connections: PostgreSQL")
    checked = check_liveness_locally(create_engine(database_url, pool_pre_ping=False))
    unchecked = create_engine(database_url, pool_pre_ping=False)
    admin = create_engine(database_url)
    try:
        pids = {}
        for name, engine in (("checked", checked), ("unchecked", unchecked)):
            async with engine.connect() as conn:  # one pooled connection each
                pids[name] = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with admin.begin() as conn:
            for pid in pids.values():
                await conn.execute(text(TERMINATE), {"pid": pid})
        await asyncio.sleep(0.2)  # the server's goodbye reaches the driver

        async with checked.connect() as conn:
            again = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert again != pids["checked"]
        with pytest.raises(DBAPIError):  # what the check saves: without it the use fails
            async with unchecked.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        for engine in (checked, unchecked, admin):
            await engine.dispose()
