"""A whole running service for the client and CLI tests, and landed orders files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from app.cli import cli
from tests.conftest import EXAMPLES
from tests.orders_data import generate, write_csv
from tests.service import running_service, service_settings

ORDERS_JOB = EXAMPLES / "orders_job.json"


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


def orders_spec(**params: Any) -> dict[str, Any]:
    """The product's sample job, with some params replaced."""
    spec: dict[str, Any] = json.loads(ORDERS_JOB.read_text())
    spec["params"].update(params)
    return spec


def failing_spec() -> dict[str, Any]:
    """A job whose first stage fails at once: its source glob matches nothing, no retries."""
    return orders_spec(source={"path": "nothing/*.csv", "format": "csv"}, retries=0)


async def strata(*args: str | Path, env: dict[str, str | None] | None = None,
                 input: str | None = None) -> Result:
    """Run `strata ARGS…` in a thread, so the service in this event loop keeps serving.

    STRATA_URL and STRATA_TOKEN from the developer's shell are cleared unless `env` sets them.
    """
    argv: Sequence[str] = [str(a) for a in args]
    environment: dict[str, str | None] = {"STRATA_URL": None, "STRATA_TOKEN": None, **(env or {})}
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, argv, input=input, env=environment,
                                   catch_exceptions=False)
