"""The `/v1/webhooks` resource: where an owner's job events are sent, and how that went."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import Caller
from app.domain.webhooks import EventType
from app.problems import PROBLEM_RESPONSES
from app.services.webhooks import NewWebhook, WebhookService
from app.store.models import Webhook, WebhookDelivery

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=PROBLEM_RESPONSES)


async def get_webhooks(request: Request) -> WebhookService:
    service = request.app.state.webhooks
    assert isinstance(service, WebhookService)
    return service


Webhooks = Annotated[WebhookService, Depends(get_webhooks)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="An http(s) URL to POST to.")
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


Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_webhook")
async def create_webhook(body: WebhookCreate, caller: Caller, hooks: Webhooks,
                         response: Response) -> WebhookCreated:
    """Send the caller's job events to `url`, signed (Standard Webhooks)."""
    hook = await hooks.create(caller.owner, NewWebhook(body.url, body.events, body.pipeline))
    response.headers["Location"] = f"/v1/webhooks/{hook.id}"
    return WebhookCreated(**WebhookPublic.of(hook).model_dump(), secret=hook.secret)


@router.get("", operation_id="list_webhooks")
async def list_webhooks(caller: Caller, hooks: Webhooks, limit: Limit = 100,
                        offset: Offset = 0) -> WebhookList:
    total, rows = await hooks.list_webhooks(caller.scope, limit=limit, offset=offset)
    return WebhookList(total=total, webhooks=[WebhookPublic.of(h) for h in rows])


@router.get("/{webhook_id}", operation_id="get_webhook")
async def get_webhook(webhook_id: str, caller: Caller, hooks: Webhooks) -> WebhookPublic:
    return WebhookPublic.of(await hooks.get(caller.scope, webhook_id))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT,
               operation_id="delete_webhook")
async def delete_webhook(webhook_id: str, caller: Caller, hooks: Webhooks) -> Response:
    """Remove the webhook and its deliveries; pending ones are not sent."""
    await hooks.delete(caller.scope, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", operation_id="list_webhook_deliveries")
async def list_deliveries(webhook_id: str, caller: Caller, hooks: Webhooks, limit: Limit = 50,
                          offset: Offset = 0) -> DeliveryList:
    """The webhook's deliveries, newest first: attempts, last answer, next attempt."""
    total, rows = await hooks.deliveries(caller.scope, webhook_id, limit=limit, offset=offset)
    return DeliveryList(total=total, deliveries=[DeliveryPublic.of(d) for d in rows])
