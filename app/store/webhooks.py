"""Every query on webhooks and their deliveries, the outbox included.

A delivery row is written in the transaction of the change it reports (`enqueue_for_events` runs
inside `store.jobs.add_events`), so a crash right after the commit delays the message and never
loses it. Dispatchers claim due rows with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), send,
and record the attempt only while they still hold the lease.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic_core import to_json
from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.domain.webhooks import event_type_of
from app.store.documents import job_document
from app.store.models import Job, JobEvent, Webhook, WebhookDelivery

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
_JOBS = Job.__table__  # type: ignore[attr-defined]


def new_delivery_id() -> str:
    return "msg_" + uuid.uuid4().hex


# --- webhooks -----------------------------------------------------------------------------

async def insert_webhook(session: AsyncSession, webhook: Webhook) -> None:
    session.add(webhook)
    await session.flush()


async def get_webhook(session: AsyncSession, webhook_id: str,
                      owner: str | None = None) -> Webhook | None:
    query = select(Webhook).where(col(Webhook.id) == webhook_id)
    if owner is not None:
        query = query.where(col(Webhook.owner) == owner)
    return (await session.execute(query)).scalars().first()


async def list_webhooks(session: AsyncSession, *, owner: str | None, limit: int,
                        offset: int) -> tuple[int, list[Webhook]]:
    where = [col(Webhook.owner) == owner] if owner is not None else []
    total = (await session.execute(select(func.count()).select_from(Webhook).where(*where)))
    query = (select(Webhook).where(*where)
             .order_by(col(Webhook.created_at).desc(), col(Webhook.id)).limit(limit).offset(offset))
    return int(total.scalar_one()), list((await session.execute(query)).scalars().all())


async def delete_webhook(session: AsyncSession, webhook: Webhook) -> None:
    """Delete the webhook; its deliveries go with it (ON DELETE CASCADE)."""
    await session.delete(webhook)
    await session.flush()


async def list_deliveries(session: AsyncSession, webhook_id: str, *, limit: int,
                          offset: int) -> tuple[int, list[WebhookDelivery]]:
    where = col(WebhookDelivery.webhook_id) == webhook_id
    total = (await session.execute(select(func.count()).select_from(WebhookDelivery).where(where)))
    query = (select(WebhookDelivery).where(where)
             .order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id))
             .limit(limit).offset(offset))
    return int(total.scalar_one()), list((await session.execute(query)).scalars().all())


# --- the outbox ---------------------------------------------------------------------------

def _pipeline_name(job: Any) -> str | None:
    """The pipeline a job was made from, where jobs record one (`{"name": …}`)."""
    pipeline = getattr(job, "pipeline", None)
    if isinstance(pipeline, Mapping):
        name = pipeline.get("name")
        return str(name) if name is not None else None
    return None


def _wants(hook: Webhook, event_type: str, pipeline: str | None) -> bool:
    return event_type in hook.events and (hook.pipeline is None or hook.pipeline == pipeline)


async def enqueue(session: AsyncSession, hooks: Iterable[Webhook], event_type: str,
                  data: Any, at: datetime, job_id: str | None = None) -> int:
    """Write one pending delivery per webhook of the message `{type, timestamp, data}`."""
    body = to_json({"type": event_type, "timestamp": at, "data": data}).decode()
    rows = [WebhookDelivery(id=new_delivery_id(), webhook_id=hook.id, type=event_type,
                            job_id=job_id, body=body, status=PENDING, created_at=at,
                            next_attempt_at=at) for hook in hooks]
    session.add_all(rows)
    return len(rows)


async def enqueue_for_owner(session: AsyncSession, owner: str, event_type: str, data: Any,
                            at: datetime, *, pipeline: str | None = None,
                            job_id: str | None = None) -> int:
    """Queue a message for every webhook of `owner` that wants `event_type` (and `pipeline`);
    for events that are not job transitions, e.g. `pipeline.tick_missed`."""
    hooks = (await session.execute(select(Webhook).where(col(Webhook.owner) == owner)))
    wanted = [h for h in hooks.scalars().all() if _wants(h, event_type, pipeline)]
    return await enqueue(session, wanted, event_type, data, at, job_id) if wanted else 0


async def enqueue_for_events(session: AsyncSession, events: Sequence[JobEvent]) -> int:
    """Queue the webhook messages these job transitions report, in the caller's transaction.

    Called after the job row was written, so the job document is the one after the change.
    Costs one query per job when its owner has no webhook.
    """
    reported: dict[str, list[JobEvent]] = {}
    for event in events:
        if event_type_of(event.event, event.to_status) is not None:
            reported.setdefault(event.job_id, []).append(event)
    queued = 0
    for job_id, job_events in reported.items():
        owner = select(_JOBS.c.owner).where(_JOBS.c.id == job_id).scalar_subquery()
        hooks = list((await session.execute(
            select(Webhook).where(col(Webhook.owner) == owner))).scalars().all())
        if not hooks:
            continue
        job = (await session.execute(select(_JOBS).where(_JOBS.c.id == job_id))).first()
        if job is None:
            continue
        document, pipeline = None, _pipeline_name(job)
        for event in job_events:
            event_type = event_type_of(event.event, event.to_status)
            assert event_type is not None
            wanted = [h for h in hooks if _wants(h, event_type, pipeline)]
            if wanted:
                document = document or job_document(job)
                queued += await enqueue(session, wanted, event_type, document, event.at, job_id)
    if queued:
        await session.flush()
    return queued


# --- dispatching --------------------------------------------------------------------------

@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one dispatcher, with what it needs to send it."""

    id: str
    body: str
    attempts: int
    created_at: datetime
    url: str
    secret: str


def _due(now: datetime) -> tuple[Any, ...]:
    return (col(WebhookDelivery.status) == PENDING, col(WebhookDelivery.next_attempt_at) <= now,
            or_(col(WebhookDelivery.lease_expires_at).is_(None),
                col(WebhookDelivery.lease_expires_at) < now))


async def claim_due(session: AsyncSession, *, owner: str, now: datetime, lease_seconds: float,
                    limit: int) -> list[Claimed]:
    """Lease up to `limit` due deliveries to `owner` and return them, oldest due first.

    PostgreSQL locks the candidates with FOR UPDATE SKIP LOCKED, so replicas never take the same
    row; the predicates are repeated in the UPDATE for SQLite, which ignores the row lock but
    serialises writers.
    """
    candidates = (
        select(col(WebhookDelivery.id)).where(*_due(now))
        .order_by(col(WebhookDelivery.next_attempt_at)).limit(limit)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id).in_(candidates.scalar_subquery()), *_due(now))
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(col(WebhookDelivery.id), col(WebhookDelivery.webhook_id),
                   col(WebhookDelivery.body), col(WebhookDelivery.attempts),
                   col(WebhookDelivery.created_at), col(WebhookDelivery.next_attempt_at))
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(claim)).all()
    if not rows:
        return []
    hook_ids = {row.webhook_id for row in rows}
    hooks = {h.id: h for h in (await session.execute(
        select(Webhook).where(col(Webhook.id).in_(hook_ids)))).scalars().all()}
    rows = sorted(rows, key=lambda row: row.next_attempt_at)
    return [Claimed(row.id, row.body, row.attempts, row.created_at, hooks[row.webhook_id].url,
                    hooks[row.webhook_id].secret) for row in rows if row.webhook_id in hooks]


async def record_attempt(session: AsyncSession, delivery_id: str, *, owner: str,
                         values: dict[str, Any]) -> bool:
    """Write an attempt's outcome and release the lease, if `owner` still holds it."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.lease_owner) == owner)
        .values(**values, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


async def release_leases(session: AsyncSession, *, owner: str) -> None:
    """Hand back every delivery `owner` holds, so another dispatcher can send it at once."""
    await session.execute(
        update(WebhookDelivery).where(col(WebhookDelivery.lease_owner) == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


async def pending_summary(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many deliveries are pending, and when the oldest of them was written."""
    query = select(func.count(), func.min(col(WebhookDelivery.created_at))).where(
        col(WebhookDelivery.status) == PENDING)
    count, oldest = (await session.execute(query)).one()
    return int(count), oldest
