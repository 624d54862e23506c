"""The README's configuration table holds for every command: each long-running command is started
as a real process with settings from the environment (or a `.env` file) only, and is found
listening where they say; flags override them."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import EXECUTOR_DEFAULT_PORT, Settings
from tests.databases import BACKENDS
from tests.processes import StrataProcess, service_env
from tests.servers import free_port


@pytest.fixture
def processes() -> Iterator[list[StrataProcess]]:
    started: list[StrataProcess] = []
    yield started
    for proc in started:
        proc.kill()


def _process(started: list[StrataProcess], command: str, env: dict[str, str], port: int,
             log: Path) -> StrataProcess:
    proc = StrataProcess(command, env, port, log)
    started.append(proc)
    return proc


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
@pytest.mark.parametrize("command", ["serve", "executor"])
async def test_a_command_listens_where_the_environment_says(
    command: str, database_url: str, tmp_path: Path, processes: list[StrataProcess]
) -> None:
    port = free_port()
    env = service_env(database_url, tmp_path, STRATA_PORT=port)
    proc = _process(processes, command, env, port, tmp_path / f"{command}.log")
    proc.start(flags=[])
    await proc.ready()
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{port}/healthz")
    assert health.status_code == 200
    if command == "executor":
        assert "runner_id" in health.json()  # the executor's own health, not the API's
    assert (tmp_path / "warehouse").is_dir()  # STRATA_WAREHOUSE_DIR was honoured too


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_dotenv_file_configures_the_executor_and_a_flag_overrides_it(
    database_url: str, tmp_path: Path, processes: list[StrataProcess]
) -> None:
    from_file, from_flag = free_port(), free_port()
    workdir = tmp_path / "here"
    workdir.mkdir()
    (workdir / ".env").write_text(
        f"STRATA_PORT={from_file}\nSTRATA_DATABASE_URL={database_url}\n"
        f"STRATA_WAREHOUSE_DIR={tmp_path / 'wh'}\nSTRATA_LANDING_DIR={tmp_path / 'land'}\n")
    by_file = _process(processes, "executor", {}, from_file, tmp_path / "file.log")
    by_file.start(flags=[], cwd=workdir)
    await by_file.ready()
    by_flag = _process(processes, "executor", {}, from_flag, tmp_path / "flag.log")
    by_flag.start(flags=["--port", str(from_flag)], cwd=workdir)
    await by_flag.ready()
    assert (tmp_path / "wh").is_dir()


def test_the_executor_takes_8001_only_when_no_port_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRATA_PORT", raising=False)
    assert Settings(_env_file=None).executor_port() == EXECUTOR_DEFAULT_PORT  # type: ignore[call-arg]
    assert Settings(_env_file=None, port=9001).executor_port() == 9001  # type: ignore[call-arg]
    monkeypatch.setenv("STRATA_PORT", "9002")
    assert Settings(_env_file=None).executor_port() == 9002  # type: ignore[call-arg]
    assert Settings(_env_file=None).port == 9002  # type: ignore[call-arg]


def test_migrate_uses_the_database_url_from_the_environment(tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "STRATA_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(database) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
    assert {"jobs", "executor_tasks", "alembic_version"} <= tables
    assert not (elsewhere / "data").exists()  # not the default ./data/strata.db
