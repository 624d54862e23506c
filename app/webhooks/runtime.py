"""The webhook parts of one app, built from the settings: the service the routes use and the
dispatcher the lifespan starts and stops."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.metrics import Metrics
from app.services.webhooks import WebhookService
from app.settings import Settings
from app.webhooks.dispatcher import Dispatcher, make_webhook_client


@dataclass
class WebhookRuntime:
    service: WebhookService
    dispatcher: Dispatcher
    http: httpx.AsyncClient

    @classmethod
    def from_settings(cls, settings: Settings, sessions: async_sessionmaker[AsyncSession],
                      metrics: Metrics, *, auth_on: bool) -> WebhookRuntime:
        # without authentication the service only listens on loopback (a developer's machine),
        # where calling a receiver on the same machine is the point
        allow_private = settings.webhook_allow_private or not auth_on
        http = make_webhook_client()
        dispatcher = Dispatcher(
            sessions, http, backoff_seconds=settings.webhook_backoff_seconds,
            retry_hours=settings.webhook_retry_hours, allow_private=allow_private,
            max_in_flight=settings.webhook_max_in_flight,
            timeout=settings.webhook_timeout_seconds, interval=settings.webhook_poll_seconds,
            metrics=metrics,
        )
        return cls(WebhookService(sessions, allow_private=allow_private), dispatcher, http)

    def start(self) -> None:
        self.dispatcher.start()

    async def stop(self) -> None:
        try:
            await self.dispatcher.stop()
        finally:
            await self.http.aclose()
