"""The webhook resource's use cases: create (the secret shown once), list, delete, deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain.webhooks import EventType, UrlRefused, WebhookNotFound, new_secret
from app.store import webhooks as store
from app.store.db import transaction
from app.store.models import Webhook, WebhookDelivery
from app.store.types import utcnow
from app.webhooks.addresses import Resolver, destination, resolve


@dataclass(frozen=True)
class NewWebhook:
    url: str
    events: Sequence[EventType]
    pipeline: str | None = None


@dataclass
class WebhookService:
    sessions: async_sessionmaker[AsyncSession]
    allow_private: bool = True
    """False with authentication on: URLs of loopback, private… addresses are refused."""
    resolver: Resolver = resolve
    clock: Callable[[], datetime] = field(default=utcnow)

    async def create(self, owner: str, new: NewWebhook) -> Webhook:
        """Store a webhook of `owner`; the returned row carries the secret, shown only now."""
        await self._check(new.url)
        hook = Webhook(id=str(uuid.uuid4()), owner=owner, url=new.url,
                       events=list(dict.fromkeys(str(e) for e in new.events)),
                       pipeline=new.pipeline, secret=new_secret(), created_at=self.clock())
        async with transaction(self.sessions) as session:
            await store.insert_webhook(session, hook)
        return hook

    async def _check(self, url: str) -> None:
        try:
            target = await destination(url, self.resolver, allow_private=self.allow_private)
        except OSError:
            return  # a name that does not resolve yet: checked again at every send
        if target.refused is not None:
            raise UrlRefused(f"{url} is refused: {target.refused}; webhooks may not call "
                             "loopback, link-local, private or unspecified addresses")

    async def list_webhooks(self, scope: str | None, *, limit: int = 100,
                   offset: int = 0) -> tuple[int, list[Webhook]]:
        async with self.sessions() as session:
            return await store.list_webhooks(session, owner=scope, limit=limit, offset=offset)

    async def get(self, scope: str | None, webhook_id: str) -> Webhook:
        async with self.sessions() as session:
            hook = await store.get_webhook(session, webhook_id, scope)
        if hook is None:
            raise WebhookNotFound(webhook_id)
        return hook

    async def delete(self, scope: str | None, webhook_id: str) -> None:
        async with transaction(self.sessions) as session:
            hook = await store.get_webhook(session, webhook_id, scope)
            if hook is None:
                raise WebhookNotFound(webhook_id)
            await store.delete_webhook(session, hook)

    async def deliveries(self, scope: str | None, webhook_id: str, *, limit: int = 50,
                         offset: int = 0) -> tuple[int, list[WebhookDelivery]]:
        async with self.sessions() as session:
            if await store.get_webhook(session, webhook_id, scope) is None:
                raise WebhookNotFound(webhook_id)
            return await store.list_deliveries(session, webhook_id, limit=limit, offset=offset)
