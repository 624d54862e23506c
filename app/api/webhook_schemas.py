"""Request and response bodies of `/v1/webhooks` (separate from the tables on purpose)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.domain.webhooks import EventType
from app.store.models import Webhook, WebhookDelivery


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, pattern=r"^[hH][tT][tT][pP][sS]?://[^/?#@\s]",
                     description="An http(s) URL to POST to.")
    events: list[EventType] = Field(min_length=1, max_length=len(EventType))
    pipeline: str | None = Field(default=None, min_length=1, max_length=200,
                                 description="Only jobs of this pipeline; null: every job.")


class WebhookPublic(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    pipeline: str | None
    created_at: datetime

    @classmethod
    def of(cls, hook: Webhook) -> WebhookPublic:
        return cls(webhook_id=hook.id, url=hook.url, events=hook.events, pipeline=hook.pipeline,
                   created_at=hook.created_at)


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="`whsec_…`: verifies the signatures. Shown only here.")


class WebhookList(BaseModel):
    total: int
    webhooks: list[WebhookPublic]


class DeliveryPublic(BaseModel):
    id: str = Field(description="The `webhook-id` header every attempt carries.")
    type: str
    job_id: str | None
    status: str = Field(description="pending, delivered or failed (given up).")
    attempts: int
    last_status: int | None = Field(description="HTTP status of the last answer, if any.")
    last_error: str | None = Field(description="Why the last attempt failed.")
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryPublic:
        return cls(id=row.id, type=row.type, job_id=row.job_id, status=row.status,
                   attempts=row.attempts, last_status=row.last_status, last_error=row.last_error,
                   created_at=row.created_at, next_attempt_at=row.next_attempt_at,
                   delivered_at=row.delivered_at)


class DeliveryList(BaseModel):
    total: int
    deliveries: list[DeliveryPublic]
