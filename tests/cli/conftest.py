"""A whole running service for the client and CLI tests, and landed orders files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.orders_data import generate, write_csv
from tests.service import running_service, service_settings


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(service_settings(database_url, tmp_path)) as client:
        yield client


@pytest.fixture
def base_url(service: httpx.AsyncClient) -> str:
    return str(service.base_url).rstrip("/")


@pytest.fixture
def orders_files(tmp_path: Path) -> list[Path]:
    return write_csv(generate(2000, seed=3), tmp_path / "src", files=2)


@pytest.fixture
async def landed(service: httpx.AsyncClient, orders_files: list[Path]) -> list[Path]:
    """The orders files already in `landing/orders/` (uploaded through the API)."""
    for path in orders_files:
        response = await service.put(f"/v1/landing/orders/{path.name}",
                                     content=path.read_bytes())
        assert response.status_code in (200, 201), response.text
    return orders_files
