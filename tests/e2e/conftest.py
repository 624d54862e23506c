from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.orders_data import Dirt, generate, write_csv
from tests.service import running_service, service_settings


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(service_settings(database_url, tmp_path)) as client:
        yield client


@pytest.fixture
def orders_files(tmp_path: Path) -> list[Path]:
    """A small dirty orders landing set, with every kind of dirt present."""
    return write_csv(generate(3000, seed=11, dirt=Dirt().scaled(5)), tmp_path / "src", files=3)
