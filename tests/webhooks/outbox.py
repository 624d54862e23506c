"""Outbox test helpers: a hand-moved clock, webhooks, jobs walked through transitions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.domain.params import JobParams
from app.domain.webhooks import EventType
from app.services.jobs import JobService, NewJob
from app.services.transitions import change_job, fire
from app.services.webhooks import NewWebhook, WebhookService
from app.store.models import Webhook, WebhookDelivery

ALL_EVENTS = [e for e in EventType if e is not EventType.PIPELINE_TICK_MISSED]


class Clock:
    """A clock the test moves by hand, so a retry due in 5 s is due without waiting 5 s."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def catch_up(self) -> None:
        """Move to the real time (after the test made its transitions in real time)."""
        self.now = max(self.now, datetime.now(UTC))

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def add_hook(hooks: WebhookService, owner: str, url: str,
                   events: list[EventType] | None = None, pipeline: str | None = None) -> Webhook:
    return await hooks.create(owner, NewWebhook(url, events or ALL_EVENTS, pipeline))


async def new_job(sessions: async_sessionmaker[AsyncSession], orders_job: dict[str, Any],
                  owner: str = "alice") -> str:
    params = JobParams.model_validate(orders_job["params"])
    job, _ = await JobService(sessions).create(owner, NewJob(name="orders", params=params))
    return job.id


async def walk(sessions: async_sessionmaker[AsyncSession], job_id: str, *events: str) -> None:
    """Send `events` to the job's machine, one committed transition each."""
    for event in events:
        await change_job(sessions, job_id,
                         lambda job, e=event: fire(job, e, datetime.now(UTC)))


SUCCESS = ("start", "stage_done", "stage_done", "stage_done", "stage_done", "succeed")


async def deliveries(sessions: async_sessionmaker[AsyncSession],
                     webhook_id: str | None = None) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).order_by(col(WebhookDelivery.created_at))
    if webhook_id is not None:
        query = query.where(col(WebhookDelivery.webhook_id) == webhook_id)
    async with sessions() as session:
        return list((await session.execute(query)).scalars().all())


def body_of(row: WebhookDelivery) -> dict[str, Any]:
    return dict(json.loads(row.body))
