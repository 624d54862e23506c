from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import StrataProcess, service_env
from tests.servers import free_port


@pytest.fixture
def make_process(tmp_path: Path) -> Iterator[object]:
    """Build Strata processes for this test; every one still running is killed at the end."""
    started: list[StrataProcess] = []

    def make(command: str, database_url: str, **env: object) -> StrataProcess:
        port = free_port()
        name = f"{command}-{len(started)}"
        proc = StrataProcess(command, service_env(database_url, tmp_path, **env), port,
                             tmp_path / f"{name}.log")
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.kill()
