"""Fixtures of the webhook tests; the helpers they use live in `tests.webhooks.outbox`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.services.webhooks import WebhookService
from tests.receivers import Receiver, running_receiver
from tests.webhooks.outbox import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hooks(sessions: async_sessionmaker[AsyncSession]) -> WebhookService:
    return WebhookService(sessions)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    async with running_receiver(r) as url:
        yield r, url
