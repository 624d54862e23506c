"""The outbox and its dispatcher against a real receiver on loopback HTTP, on both backends.

Retries are made due by moving an injected clock, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook as Verifier

from app.domain.webhooks import EventType
from app.services.transitions import fire, save
from app.services.webhooks import WebhookService
from app.store import jobs as job_store
from app.store import webhooks as store
from app.store.db import transaction
from app.webhooks.dispatcher import Dispatcher, make_webhook_client
from tests.receivers import HANG, Receiver, running_receiver
from tests.servers import free_port
from tests.waiting import wait_for
from tests.webhooks.outbox import (
    SUCCESS,
    Clock,
    add_hook,
    body_of,
    deliveries,
    new_job,
    walk,
)

Sessions = async_sessionmaker[AsyncSession]


def dispatcher(sessions: Sessions, clock: Clock | None = None, **kwargs: Any) -> Dispatcher:
    kwargs.setdefault("jitter", lambda: 0.999999)
    kwargs.setdefault("timeout", 5.0)
    return Dispatcher(sessions, make_webhook_client(), clock=clock or Clock(), **kwargs)


async def send_due(d: Dispatcher) -> int:
    sent = await d.dispatch_due()
    await d.in_flight_done()
    return sent


# --- the outbox ---------------------------------------------------------------------------

async def test_every_reported_transition_writes_one_delivery_with_the_job_after_it(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
) -> None:
    hook = await add_hook(hooks, "alice", "http://127.0.0.1:9/hook")
    job_id = await new_job(sessions, orders_job)
    await walk(sessions, job_id, *SUCCESS)
    rows = await deliveries(sessions, hook.id)
    assert [r.type for r in rows] == ["job.stage_done"] * 4 + ["job.succeeded"]
    statuses = [body_of(r)["data"]["status"] for r in rows]
    assert statuses == ["ODSToDWD", "DWDToDWS", "DWSToDS", "Completed", "Succeeded"]
    assert all(r.status == "pending" and r.attempts == 0 and r.job_id == job_id for r in rows)
    assert len({r.id for r in rows}) == 5


async def test_a_transition_that_rolls_back_leaves_no_delivery(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
) -> None:
    await add_hook(hooks, "alice", "http://127.0.0.1:9/hook")
    job_id = await new_job(sessions, orders_job)
    with pytest.raises(RuntimeError):
        async with transaction(sessions) as session:
            job = await job_store.get_job(session, job_id)
            assert job is not None
            session.expunge(job)
            await save(session, job, fire(job, "cancel", datetime.now(UTC)))
            assert len(await deliveries(sessions)) == 0  # not visible before the commit
            raise RuntimeError("crash before the commit")
    assert await deliveries(sessions) == []


async def test_a_webhook_hears_only_its_owners_jobs_and_events_and_pipeline(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
) -> None:
    bob = await add_hook(hooks, "bob", "http://127.0.0.1:9/hook")
    only_success = await add_hook(hooks, "alice", "http://127.0.0.1:9/hook",
                                  [EventType.JOB_SUCCEEDED])
    of_pipeline = await add_hook(hooks, "alice", "http://127.0.0.1:9/hook",
                                 [EventType.JOB_CANCELLED], pipeline="nightly")
    every = await add_hook(hooks, "alice", "http://127.0.0.1:9/hook",
                           [EventType.JOB_CANCELLED])
    job_id = await new_job(sessions, orders_job, owner="alice")
    await walk(sessions, job_id, "start", "cancel")
    assert await deliveries(sessions, bob.id) == []
    assert await deliveries(sessions, only_success.id) == []
    assert await deliveries(sessions, of_pipeline.id) == []
    assert [r.type for r in await deliveries(sessions, every.id)] == ["job.cancelled"]


async def test_a_non_job_event_is_queued_for_the_owners_webhooks(
    sessions: Sessions, hooks: WebhookService,
) -> None:
    hook = await add_hook(hooks, "alice", "http://127.0.0.1:9/hook",
                          [EventType.PIPELINE_TICK_MISSED], pipeline="nightly")
    async with transaction(sessions) as session:
        for pipeline in ("nightly", "hourly"):
            await store.enqueue_for_owner(session, "alice", "pipeline.tick_missed",
                                          {"pipeline": pipeline}, datetime.now(UTC),
                                          pipeline=pipeline)
    rows = await deliveries(sessions, hook.id)
    assert [body_of(r)["data"] for r in rows] == [{"pipeline": "nightly"}]


# --- sending ------------------------------------------------------------------------------

async def test_a_delivery_reaches_a_real_receiver_signed(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
    receiver: tuple[Receiver, str],
) -> None:
    r, url = receiver
    hook = await add_hook(hooks, "alice", url)
    job_id = await new_job(sessions, orders_job)
    await walk(sessions, job_id, "cancel")
    d = dispatcher(sessions)
    assert await send_due(d) == 1
    [got] = r.received
    payload = Verifier(hook.secret).verify(got.body, got.headers)
    assert payload["type"] == "job.cancelled"
    assert payload["data"]["job_id"] == job_id and payload["data"]["status"] == "Cancelled"
    [row] = await deliveries(sessions, hook.id)
    assert got.headers["webhook-id"] == row.id
    assert (row.status, row.attempts, row.last_status, row.last_error) == ("delivered", 1, 200,
                                                                             None)
    assert row.delivered_at is not None and row.next_attempt_at is None
    assert await send_due(d) == 0, "a delivered message is never sent again"
    assert d.metrics.webhook_deliveries_sent._value.get() == 1


async def test_a_failing_receiver_is_retried_with_the_same_id_and_doubling_waits(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
    receiver: tuple[Receiver, str], clock: Clock,
) -> None:
    r, url = receiver
    r.answers = [500, 503, 200]
    hook = await add_hook(hooks, "alice", url)
    await walk(sessions, await new_job(sessions, orders_job), "cancel")
    clock.catch_up()
    d = dispatcher(sessions, clock, backoff_seconds=5)
    waits = []
    for answer in (500, 503):
        assert await send_due(d) == 1
        [row] = await deliveries(sessions, hook.id)
        assert (row.status, row.last_status) == ("pending", answer)
        assert row.next_attempt_at is not None
        waits.append((row.next_attempt_at - clock()).total_seconds())
        assert await send_due(d) == 0, "not due before its wait has passed"
        clock.advance(waits[-1])
    assert waits == pytest.approx([5, 10], abs=0.01)
    assert await send_due(d) == 1
    [row] = await deliveries(sessions, hook.id)
    assert (row.status, row.attempts, row.last_status) == ("delivered", 3, 200)
    assert len(set(r.ids())) == 1 and r.ids()[0] == row.id
    stamps = [int(got.headers["webhook-timestamp"]) for got in r.received]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3, "each attempt signed anew"
    for got in r.received:
        Verifier(hook.secret).verify(got.body, got.headers)
    assert len({got.body for got in r.received}) == 1
    assert d.metrics.webhook_attempt_errors._value.get() == 2


async def test_a_receiver_that_hangs_times_out_without_delaying_the_others(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
    receiver: tuple[Receiver, str],
) -> None:
    fast, fast_url = receiver
    slow = Receiver(default=HANG)
    async with running_receiver(slow) as slow_url:
        slow_hook = await add_hook(hooks, "alice", slow_url)
        fast_hook = await add_hook(hooks, "alice", fast_url)
        await walk(sessions, await new_job(sessions, orders_job), "cancel")
        d = dispatcher(sessions, timeout=1.0)
        assert await d.dispatch_due() == 2

        async def fast_delivered() -> bool:
            rows = await deliveries(sessions, fast_hook.id)
            return rows[0].status == "delivered"

        await wait_for(fast_delivered, timeout=0.9, message="the fast receiver's delivery")
        assert slow.in_progress == 1, "the slow receiver is still holding its request"
        await d.in_flight_done()
    [row] = await deliveries(sessions, slow_hook.id)
    assert (row.status, row.last_status) == ("pending", None)
    assert row.last_error == "no answer within 1s"
    assert len(fast.received) == 1


async def test_a_receiver_that_is_down_is_retried_later(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any], clock: Clock,
) -> None:
    hook = await add_hook(hooks, "alice", f"http://127.0.0.1:{free_port()}/hook")
    await walk(sessions, await new_job(sessions, orders_job), "cancel")
    clock.catch_up()
    assert await send_due(dispatcher(sessions, clock)) == 1
    [row] = await deliveries(sessions, hook.id)
    assert row.status == "pending" and row.attempts == 1 and row.last_status is None
    assert row.last_error is not None and "Connect" in row.last_error
    assert row.next_attempt_at is not None and row.next_attempt_at > clock()


async def test_a_redirect_is_not_followed(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
    receiver: tuple[Receiver, str],
) -> None:
    r, url = receiver
    r.answers = [302]
    hook = await add_hook(hooks, "alice", url)
    await walk(sessions, await new_job(sessions, orders_job), "cancel")
    await send_due(dispatcher(sessions))
    [row] = await deliveries(sessions, hook.id)
    assert (row.status, row.last_status) == ("pending", 302)
    assert len(r.received) == 1


async def test_a_delivery_is_given_up_when_the_retry_window_has_passed(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
    receiver: tuple[Receiver, str], clock: Clock,
) -> None:
    r, url = receiver
    r.default = 500
    hook = await add_hook(hooks, "alice", url)
    await walk(sessions, await new_job(sessions, orders_job), "cancel")
    clock.catch_up()
    d = dispatcher(sessions, clock, backoff_seconds=600, retry_hours=0.6)
    attempts = 0
    while (rows := await deliveries(sessions, hook.id))[0].status == "pending":
        assert rows[0].next_attempt_at is not None
        clock.now = max(clock.now, rows[0].next_attempt_at)
        attempts += await send_due(d)
        assert attempts < 10
    [row] = await deliveries(sessions, hook.id)
    assert row.status == "failed" and row.next_attempt_at is None
    assert attempts == 3  # at 0, 600 and 1800 s; the next, at 4200 s, is past the 36 minutes
    assert d.metrics.webhook_deliveries_failed._value.get() == 1


# --- no SSRF ------------------------------------------------------------------------------

async def test_a_name_resolving_to_a_private_address_is_refused_at_send(
    sessions: Sessions, orders_job: dict[str, Any],
) -> None:
    names = {"hooks.example.com": ["93.184.215.14"]}

    async def resolver(host: str, port: int) -> list[str]:
        return names[host]

    public = WebhookService(sessions, allow_private=False, resolver=resolver)
    hook = await add_hook(public, "alice", "http://hooks.example.com/hook")
    names["hooks.example.com"] = ["10.0.0.7"]  # the name now points inside
    await walk(sessions, await new_job(sessions, orders_job), "cancel")
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    d = Dispatcher(sessions, httpx.AsyncClient(transport=httpx.MockTransport(record)),
                   allow_private=False, resolver=resolver)
    await send_due(d)
    [row] = await deliveries(sessions, hook.id)
    assert row.status == "failed" and row.attempts == 1
    assert row.last_error is not None and "10.0.0.7 is a private address" in row.last_error
    assert sent == []


async def test_a_send_goes_to_the_address_that_was_checked(
    sessions: Sessions, orders_job: dict[str, Any],
) -> None:
    """The host is resolved once; the request connects to that address with the URL's Host."""
    port = 8443
    seen: list[httpx.URL] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        assert request.headers["host"] == f"hooks.example.com:{port}"
        return httpx.Response(204)

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    hooks = WebhookService(sessions, allow_private=False, resolver=resolver)
    hook = await add_hook(hooks, "alice", f"http://hooks.example.com:{port}/hook")
    await walk(sessions, await new_job(sessions, orders_job), "cancel")
    d = Dispatcher(sessions, httpx.AsyncClient(transport=httpx.MockTransport(record)),
                   allow_private=False, resolver=resolver)
    await send_due(d)
    assert [u.host for u in seen] == ["93.184.215.14"]
    [row] = await deliveries(sessions, hook.id)
    assert row.status == "delivered"


# --- crashes and replicas -------------------------------------------------------------------

async def test_a_dispatcher_that_died_mid_send_leaves_the_delivery_to_another(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
    receiver: tuple[Receiver, str], clock: Clock,
) -> None:
    r, url = receiver
    hook = await add_hook(hooks, "alice", url)
    await walk(sessions, await new_job(sessions, orders_job), "cancel")
    clock.catch_up()
    async with transaction(sessions) as session:  # claimed by a process that then died
        [claimed] = await store.claim_due(session, owner="dead", now=clock(), lease_seconds=30,
                                          limit=10)
    survivor = dispatcher(sessions, clock)
    assert await send_due(survivor) == 0, "the lease still holds"
    clock.advance(31)
    assert await send_due(survivor) == 1
    assert r.ids() == [claimed.id]
    [row] = await deliveries(sessions, hook.id)
    assert row.status == "delivered"


async def test_two_dispatchers_never_send_one_delivery_twice(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any],
    receiver: tuple[Receiver, str],
) -> None:
    r, url = receiver
    await add_hook(hooks, "alice", url, [EventType.JOB_CANCELLED])
    for _ in range(24):
        await walk(sessions, await new_job(sessions, orders_job), "cancel")
    replicas = [dispatcher(sessions, interval=0.01, max_in_flight=3, name=f"replica-{n}")
                for n in range(2)]
    for d in replicas:
        d.start()
    try:
        async def all_delivered() -> bool:
            return all(row.status == "delivered" for row in await deliveries(sessions))

        await wait_for(all_delivered, timeout=30, message="every delivery delivered")
    finally:
        await asyncio.gather(*(d.stop() for d in replicas))
    assert len(r.received) == 24
    assert Counter(r.ids()).most_common(1)[0][1] == 1
    assert sum(d.metrics.webhook_deliveries_sent._value.get() for d in replicas) == 24
    assert r.most_at_once <= 6


async def test_the_gauges_count_pending_deliveries_and_the_oldest_age(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any], clock: Clock,
) -> None:
    await add_hook(hooks, "alice", "http://127.0.0.1:9/hook")
    await walk(sessions, await new_job(sessions, orders_job), "cancel")
    clock.catch_up()
    d = dispatcher(sessions, clock)
    clock.advance(120)
    await d.refresh_gauges()
    assert d.metrics.webhook_deliveries_pending._value.get() == 1
    assert d.metrics.webhook_oldest_pending_seconds._value.get() >= 119
    assert clock() - timedelta(seconds=119) > (await deliveries(sessions))[0].created_at


async def test_a_dispatcher_stopped_mid_send_hands_the_delivery_back_at_once(
    sessions: Sessions, hooks: WebhookService, orders_job: dict[str, Any], clock: Clock,
) -> None:
    slow = Receiver(answers=[HANG])
    async with running_receiver(slow) as url:
        hook = await add_hook(hooks, "alice", url)
        await walk(sessions, await new_job(sessions, orders_job), "cancel")
        clock.catch_up()
        stopping = dispatcher(sessions, clock)
        assert await stopping.dispatch_due() == 1
        await wait_for(lambda: slow.in_progress == 1, timeout=5, message="the send under way")
        await stopping.stop(grace=0.1)
        [row] = await deliveries(sessions, hook.id)
        assert (row.status, row.attempts, row.lease_owner) == ("pending", 0, None)
        assert await send_due(dispatcher(sessions, clock)) == 1, "no lease left to wait out"
    [row] = await deliveries(sessions, hook.id)
    assert row.status == "delivered"
    assert len(set(slow.ids())) == 1 and len(slow.received) == 2
