"""The `/v1/webhooks` resource: where an owner's job events are sent, and how that went."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.api.deps import Caller, Context
from app.api.webhook_schemas import (
    DeliveryList,
    DeliveryPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookPublic,
)
from app.problems import PROBLEM_RESPONSES
from app.services.webhooks import NewWebhook, WebhookService

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=PROBLEM_RESPONSES)


async def get_webhooks(ctx: Context) -> WebhookService:
    return ctx.webhooks.service


Webhooks = Annotated[WebhookService, Depends(get_webhooks)]


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
