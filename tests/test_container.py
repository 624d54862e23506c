"""The composition root: building the app touches nothing; running it starts and stops it all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from app.api.deps import services_of
from app.container import Services, build_services, run_services
from app.main import create_app
from tests.service import service_settings


def test_building_the_app_for_its_openapi_document_creates_no_folder_and_no_database(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    settings = service_settings(f"sqlite+aiosqlite:///{root / 'strata.db'}", root)

    app = create_app(settings)
    app.openapi()

    assert not root.exists(), sorted(p.name for p in root.rglob("*"))
    assert services_of(app).db.pool.checkedout() == 0


def stopped(services: Services) -> dict[str, bool]:
    """Which long-running pieces still run, and whether the executor client is closed."""
    return {
        "executor": services.executor is not None and services.executor.runner.started,
        "watcher": services.watcher.started,
        "listener": services.listener is not None and services.listener.started,
        "http open": not services.http.is_closed,
    }


def failing_after(stop: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def stop_then_fail() -> None:
        await stop()
        raise RuntimeError("stop failed")

    return stop_then_fail


@pytest.mark.parametrize("piece", ["listener", "watcher", "executor"])
async def test_a_failing_stop_does_not_leave_the_others_running(
    database_url: str, tmp_path: Path, piece: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = service_settings(database_url, tmp_path)
    services = build_services(settings, tokens=None)
    target = getattr(services, piece)
    if target is None:
        pytest.skip(f"no {piece} on this backend")
    monkeypatch.setattr(target, "stop", failing_after(target.stop))

    with pytest.raises(RuntimeError, match="stop failed"):
        async with run_services(services):
            assert stopped(services)["watcher"] and stopped(services)["executor"]
            assert settings.landing_path().is_dir() and settings.warehouse_path().is_dir()

    assert not any(stopped(services).values()), stopped(services)


async def test_a_failing_start_stops_what_already_started(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = build_services(service_settings(database_url, tmp_path), tokens=None)

    def refuse() -> None:
        raise RuntimeError("start failed")

    monkeypatch.setattr(services.watcher, "start", refuse)
    with pytest.raises(RuntimeError, match="start failed"):
        async with run_services(services):
            pytest.fail("the services ran although one did not start")

    assert not any(stopped(services).values()), stopped(services)
