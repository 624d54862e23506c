"""A whole Strata service for tests: real HTTP, real database, real executor, real files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from app.main import create_app
from app.settings import Settings
from tests.servers import free_port, serve_app


def service_settings(database_url: str, root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "landing_dir": root / "landing",
        "warehouse_dir": root / "warehouse",
        "host": "127.0.0.1",
        "port": free_port(),
        "watch_interval": 0.05,
        "retry_backoff_seconds": 0.05,
        "executor_workers": 2,
        "task_create_rate": 1000.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the embedded default on its own port; yield a client for it."""
    app = create_app(settings)
    async with serve_app(app, port=settings.port) as base_url, httpx.AsyncClient(
        base_url=base_url, timeout=30.0
    ) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client
