"""The SQL sandbox attacked through the public API: each escape fails the job with a message
that says what was refused, and creates no file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jobs_over_http import submit, wait_status

ATTACKS = [
    ("read a system file", "SELECT * FROM read_csv('/etc/passwd')", "'/etc/passwd' refused"),
    ("file as a table", "SELECT * FROM '/etc/hostname'", "'/etc/hostname' refused"),
    ("another job's layer", "SELECT * FROM read_parquet('{other}/ods/*.parquet')", "refused"),
    ("copy out", "COPY (SELECT * FROM ods) TO '{out}/stolen.csv'", "COPY"),
    ("attach", "ATTACH '{out}/x.db' AS x", "ATTACH"),
    ("install", "INSTALL httpfs", "INSTALL"),
    ("load", "LOAD httpfs", "LOAD"),
    ("set", "SET enable_external_access = true", "SET"),
    ("pragma", "PRAGMA enable_profiling", "PRAGMA"),
    ("two statements", "SELECT * FROM ods; COPY ods TO '{out}/x.csv'", "2 statements"),
    ("export", "EXPORT DATABASE '{out}/dump'", "EXPORT"),
]


def job(sql: str) -> dict[str, Any]:
    return {"name": "attack", "params": {
        "source": {"path": "in/*.csv", "format": "csv", "options": {"header": True}},
        "layers": {"dwd": {"sql": sql}}, "retries": 0}}


@pytest.fixture
async def victim(api: httpx.AsyncClient, tmp_path: Path) -> str:
    """A finished job whose layers an attacker would like to read."""
    await api.put("/v1/landing/in/a.csv", content=b"id,secret\n1,hunter2\n2,swordfish\n")
    job_id = await submit(api, job("SELECT * FROM ods"))
    assert (await wait_status(api, job_id))["status"] == "Succeeded"
    return str(tmp_path / "warehouse" / job_id)


@pytest.mark.parametrize(("attack", "sql", "refused"), ATTACKS, ids=[a[0] for a in ATTACKS])
async def test_an_escape_fails_the_job_with_a_clear_message_and_writes_nothing(
    api: httpx.AsyncClient, victim: str, tmp_path: Path, attack: str, sql: str, refused: str
) -> None:
    out = tmp_path / "loot"
    out.mkdir()
    job_id = await submit(api, job(sql.format(other=victim, out=out)))
    done = await wait_status(api, job_id)
    assert done["status"] == "Failed", attack
    failed = next(c for c in done["conditions"] if c["type"] == "Failed")
    assert refused in failed["message"], failed["message"]
    assert "Traceback" not in failed["message"]
    assert list(out.iterdir()) == []
    assert not (tmp_path / "warehouse" / job_id / "dwd").exists()
