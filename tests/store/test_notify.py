"""Wake-ups over PostgreSQL NOTIFY: a listener hears other processes, and may skip the echo of
what its own process sent (that process woke itself directly)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.store.db import asyncpg_dsn, transaction
from app.store.notify import ORIGIN, WakeListener, notify, parse_payload
from tests.waiting import wait_for


def test_a_payload_names_its_origin_and_what_to_wake() -> None:
    assert parse_payload(f"{ORIGIN}|job-1") == (ORIGIN, "job-1")
    assert parse_payload("other|") == ("other", None)
    assert parse_payload("job-1") == (None, "job-1"), "an unmarked payload wakes its job"


async def test_a_listener_that_skips_its_own_echo_still_hears_other_processes(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dsn = asyncpg_dsn(database_url)
    if dsn is None:
        pytest.skip("NOTIFY is PostgreSQL's")
    everything: list[str | None] = []
    others: list[str | None] = []
    hears_all = WakeListener(dsn, everything.append)
    skips_own = WakeListener(dsn, others.append, skip_own=True)
    hears_all.start()
    skips_own.start()
    try:  # each listener wakes everything once it listens
        await wait_for(lambda: everything and others, 10, message="both listening")
        async with transaction(sessions) as session:
            await notify(session, "mine")
        await wait_for(lambda: "mine" in everything, 10, message="the notification")
        async with transaction(sessions) as session:  # as another process sends it
            await session.execute(
                text("SELECT pg_notify('strata_wakeup', 'peer|theirs')"))
        await wait_for(lambda: "theirs" in others, 10, message="the other process's wake-up")
    finally:
        await hears_all.stop()
        await skips_own.stop()

    assert "mine" not in others
