"""Wake-ups between processes: PostgreSQL NOTIFY when a job is created or a task finishes.

A notification is only a hint — the watcher still polls — so losing one costs a poll interval,
never correctness. On SQLite there is no cross-process channel and `notify` does nothing; the
embedded default wakes the watcher in-process instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import func, literal, text
from sqlalchemy.ext.asyncio import AsyncSession

WAKE_CHANNEL = "strata_wakeup"
ORIGIN = uuid.uuid4().hex[:12]
"""This process's mark on the wake-ups it sends. Whoever notifies also wakes its own process
directly, so a listener may skip its own process's echo (`skip_own`): answering it costs the
watcher a second claim and poll of a job it is already advancing."""
log = logging.getLogger("strata.notify")


async def notify(session: AsyncSession, payload: str) -> None:
    """Queue a wake-up; PostgreSQL delivers it when the transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:channel, :payload)"),
                              {"channel": WAKE_CHANNEL, "payload": f"{ORIGIN}|{payload[:180]}"})


def notify_column(payload: Any) -> Any:
    """`pg_notify` as a column of a statement's RETURNING, with `payload` (a SQL expression of
    the row) as what to wake: the wake-up goes out with the write itself, one round trip instead
    of two, and only for the rows the statement wrote. PostgreSQL only."""
    return func.pg_notify(WAKE_CHANNEL, literal(f"{ORIGIN}|") + payload)


def parse_payload(payload: str) -> tuple[str | None, str | None]:
    """(origin, what to wake) of a notification; an unmarked one has no origin."""
    origin, mark, what = payload.partition("|")
    if not mark:
        return None, payload or None
    return origin, what or None


class WakeListener:
    """LISTENs on its own connection and calls `on_wake` per notification; reconnects forever."""

    def __init__(
        self, dsn: str, on_wake: Callable[[str | None], None], retry_seconds: float = 1.0,
        *, skip_own: bool = False,
    ) -> None:
        self.dsn = dsn
        self.on_wake = on_wake
        self.retry_seconds = retry_seconds
        self.skip_own = skip_own
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="strata-wake-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        origin, what = parse_payload(payload)
        if self.skip_own and origin == ORIGIN:
            return
        self.on_wake(what)

    async def _run(self) -> None:
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                await conn.add_listener(WAKE_CHANNEL, self._on_notification)
                self.on_wake(None)  # anything that happened while not listening: a full pass
                while not lost.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=5)
                    if not conn.is_closed():
                        await conn.execute("SELECT 1")  # notice a dead socket
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wake listener lost its connection (%s); polling meanwhile", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(self.retry_seconds)
