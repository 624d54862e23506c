from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.service import running_service, service_settings


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The embedded service over real HTTP, its lifespan (watcher, executor) running."""
    async with running_service(service_settings(database_url, tmp_path)) as client:
        yield client
