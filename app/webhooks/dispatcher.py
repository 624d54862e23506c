"""The dispatcher: empties the webhook outbox over HTTP, at least once.

Each pass leases due deliveries (as many as there are free send slots), and sends each in its
own task with a per-request timeout, so a slow or dead receiver holds one slot and never delays
the others. Every attempt is signed anew with its own timestamp under the same `webhook-id`.
A 2xx answer delivers; anything else (another status, a redirect — never followed —, a timeout,
a refused connection) is retried after an exponential wait with jitter until the retry window
has passed. A delivery whose URL resolves to a refused address fails at once and says why.

The outcome is recorded only while this dispatcher still holds the lease; a dispatcher that dies
mid-send leaves the lease to expire and another one (or itself, restarted) sends again — the
receiver deduplicates by `webhook-id`. Polling is the source of truth; `wake()` only shortens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain.webhooks import UrlRefused, backoff_seconds, signed_headers
from app.faults import crash_point
from app.metrics import Metrics
from app.store import webhooks as store
from app.store.db import transaction
from app.store.types import utcnow
from app.webhooks.addresses import Resolver, destination, resolve

log = logging.getLogger("strata.webhooks")


def make_webhook_client() -> httpx.AsyncClient:
    """The client of every send: no redirects, no proxies from the environment, no cookies."""
    return httpx.AsyncClient(follow_redirects=False, trust_env=False,
                             headers={"user-agent": "strata-webhooks"})


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        http: httpx.AsyncClient,
        *,
        backoff_seconds: float = 5.0,
        retry_hours: float = 24.0,
        allow_private: bool = True,
        resolver: Resolver = resolve,
        max_in_flight: int = 16,
        timeout: float = 10.0,
        interval: float = 1.0,
        lease_seconds: float | None = None,
        clock: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
        name: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.http = http
        self.first_backoff = backoff_seconds
        self.retry_window = timedelta(hours=retry_hours)
        self.allow_private = allow_private
        self.resolver = resolver
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.interval = interval
        self.lease_seconds = lease_seconds or timeout * 2 + 5.0
        self.clock = clock
        self.jitter = jitter
        self.metrics = metrics or Metrics()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._sending: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._gauges_at = float("-inf")

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._loop = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; give the sends in flight `grace` seconds (default: their timeout),
        cancel the rest and hand their leases back so another dispatcher sends them at once."""
        self._stopping.set()
        self._wake.set()
        if self._loop is not None:
            await self._loop
            self._loop = None
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=self.timeout if grace is None else grace)
        for task in list(self._sending):
            task.cancel()
        for task in list(self._sending):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            async with transaction(self.sessions) as session:
                await store.release_leases(session, owner=self.name)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.dispatch_due()
                now = asyncio.get_running_loop().time()
                if now - self._gauges_at >= self.interval:
                    self._gauges_at = now
                    await self.refresh_gauges()
            except Exception:
                log.exception("webhook dispatch pass failed; retrying in %ss", self.interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    # --- one pass ----------------------------------------------------------------------

    async def dispatch_due(self) -> int:
        """Lease due deliveries for the free send slots and start sending them."""
        free = self.max_in_flight - len(self._sending)
        if free <= 0:
            return 0
        async with transaction(self.sessions) as session:
            claimed = await store.claim_due(session, owner=self.name, now=self.clock(),
                                            lease_seconds=self.lease_seconds, limit=free)
        for delivery in claimed:
            task = asyncio.create_task(self.deliver(delivery), name=f"webhook-{delivery.id}")
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return len(claimed)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake.set()  # a slot is free

    async def in_flight_done(self) -> None:
        """Wait until every send started so far has finished (for tests and shutdown)."""
        while self._sending:
            await asyncio.wait(set(self._sending))

    async def deliver(self, delivery: store.Claimed) -> None:
        crash_point("webhook_before_send")
        try:
            status, error, final = await self._attempt(delivery)
        except Exception as exc:  # a bug must not strand the delivery under a dead lease
            log.exception("webhook attempt of delivery %s failed unexpectedly", delivery.id)
            status, error, final = None, f"{type(exc).__name__}: {exc}"[:2000], False
        now = self.clock()
        attempts = delivery.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status": status,
                                  "last_error": error}
        if error is None:
            values.update(status=store.DELIVERED, delivered_at=now, next_attempt_at=None)
        else:
            retry_at = now + timedelta(seconds=backoff_seconds(attempts, self.first_backoff,
                                                               self.jitter))
            if final or retry_at > delivery.created_at + self.retry_window:
                values.update(status=store.FAILED, next_attempt_at=None)
            else:
                values.update(next_attempt_at=retry_at)
        try:
            async with transaction(self.sessions) as session:
                kept = await store.record_attempt(session, delivery.id, owner=self.name,
                                                  values=values)
        except Exception:
            log.exception("could not record the attempt of delivery %s", delivery.id)
            return
        if not kept:
            log.warning("delivery %s: lease lost before its attempt was recorded", delivery.id)
        self._count(values.get("status"))

    def _count(self, status: str | None) -> None:
        if status == store.DELIVERED:
            self.metrics.webhook_deliveries_sent.inc()
        elif status == store.FAILED:
            self.metrics.webhook_deliveries_failed.inc()
        else:
            self.metrics.webhook_attempt_errors.inc()

    async def _attempt(self, delivery: store.Claimed) -> tuple[int | None, str | None, bool]:
        """Send once: (HTTP status, why it failed or None, whether retrying is pointless)."""
        try:
            async with asyncio.timeout(self.timeout):  # with the send, well within the lease
                target = await destination(delivery.url, self.resolver,
                                           allow_private=self.allow_private)
        except UrlRefused as exc:
            return None, f"refused: {exc}", True
        except (OSError, TimeoutError) as exc:
            return None, f"cannot resolve the host: {exc}"[:2000], False
        if target.refused is not None:
            return None, f"refused: {target.refused} (STRATA_WEBHOOK_ALLOW_PRIVATE)", True
        body = delivery.body.encode()
        headers = signed_headers(delivery.secret, delivery.id, int(self.clock().timestamp()), body)
        url = httpx.URL(delivery.url)
        extensions: dict[str, Any] = {}
        if target.address is not None:  # call the checked address, not a second resolution
            headers["host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = target.host
            url = url.copy_with(host=target.address)
        try:
            async with asyncio.timeout(self.timeout):  # httpx's timeout bounds each phase only
                response = await self.http.post(url, content=body, headers=headers,
                                                timeout=self.timeout, follow_redirects=False,
                                                extensions=extensions)
        except (httpx.TimeoutException, TimeoutError):
            return None, f"no answer within {self.timeout:g}s", False
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:2000], False
        if response.is_success:
            return response.status_code, None, False
        return response.status_code, f"answered {response.status_code}", False

    async def refresh_gauges(self) -> None:
        async with self.sessions() as session:
            pending, oldest = await store.pending_summary(session)
        self.metrics.webhook_deliveries_pending.set(pending)
        age = (self.clock() - oldest).total_seconds() if oldest is not None else 0.0
        self.metrics.webhook_oldest_pending_seconds.set(max(0.0, age))
