"""Bearer tokens map to owners; another owner's job is a 404 everywhere; admins see all."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.logs import RedactSecrets
from tests.service import running_service, service_settings

TOKENS = {"alice": "alice-token-123", "bob": "bob-token-4567", "admin": "admin-token-89"}


def auth(owner: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[owner]}"}


def job_body() -> dict[str, Any]:
    return {"name": "mine", "suspend": True,
            "params": {"source": {"path": "x/*.csv"}}}


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = service_settings(database_url, tmp_path,
                             api_tokens=",".join(f"{o}={t}" for o, t in TOKENS.items()))
    async with running_service(settings) as client:
        yield client


async def test_requests_without_a_valid_token_are_401_problems(api: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic eA=="}):
        response = await api.get("/v1/jobs", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"] == "Bearer"
    assert (await api.get("/healthz")).status_code == 200


async def test_another_owners_job_is_404_on_every_endpoint(api: httpx.AsyncClient) -> None:
    created = await api.post("/v1/jobs", json=job_body(), headers=auth("alice"))
    job = created.json()
    assert created.status_code == 201 and job["owner"] == "alice"
    url = f"/v1/jobs/{job['job_id']}"
    for method, path, kwargs in (
        ("GET", "", {}), ("PATCH", "", {"json": {"name": "stolen"}}),
        ("POST", "/cancel", {}), ("POST", "/suspend", {}), ("POST", "/resume", {}),
        ("POST", "/retry", {}), ("GET", "/events", {}), ("GET", "/output", {}),
        ("GET", "/layers/ods", {}), ("GET", "/layers/ods/rejects", {}),
        ("GET", "/watch", {}), ("DELETE", "", {}),
    ):
        response = await api.request(method, f"{url}{path}", headers=auth("bob"), **kwargs)
        assert response.status_code == 404, (method, path, response.status_code)
    assert (await api.get("/v1/jobs", headers=auth("bob"))).json() == {"total": 0, "jobs": []}
    mine = await api.get(url, headers=auth("alice"))
    assert mine.status_code == 200 and mine.json()["name"] == "mine"


async def test_admins_see_every_owners_jobs(api: httpx.AsyncClient) -> None:
    for owner in ("alice", "bob"):
        await api.post("/v1/jobs", json=job_body(), headers=auth(owner))
    listed = (await api.get("/v1/jobs", headers=auth("admin"))).json()
    assert sorted(j["owner"] for j in listed["jobs"]) == ["alice", "bob"]


async def test_an_idempotency_key_is_scoped_to_its_owner(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "same-key"}
    a = await api.post("/v1/jobs", json=job_body(), headers={**auth("alice"), **key})
    b = await api.post("/v1/jobs", json=job_body(), headers={**auth("bob"), **key})
    assert a.status_code == b.status_code == 201
    assert a.json()["job_id"] != b.json()["job_id"]


async def test_each_owner_lands_files_in_their_own_space(api: httpx.AsyncClient,
                                                         tmp_path: Path) -> None:
    await api.put("/v1/landing/in/a.csv", content=b"x\n1\n", headers=auth("alice"))
    assert [f["path"] for f in (await api.get("/v1/landing", headers=auth("alice"))).json()[
        "files"]] == ["in/a.csv"]
    assert (await api.get("/v1/landing", headers=auth("bob"))).json()["files"] == []
    assert (tmp_path / "landing" / "alice" / "in" / "a.csv").exists()


def test_tokens_are_redacted_from_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("strata.test-redaction")
    redact = RedactSecrets(TOKENS.values())
    logger.addFilter(redact)
    try:
        with caplog.at_level(logging.INFO, logger="strata.test-redaction"):
            logger.info("got Authorization: Bearer %s and %s", "abc.def-ghi", TOKENS["bob"])
    finally:
        logger.removeFilter(redact)
    assert "abc.def-ghi" not in caplog.text and TOKENS["bob"] not in caplog.text
    assert caplog.text.count("[REDACTED]") == 2


def test_the_service_refuses_to_run_without_tokens_off_loopback(tmp_path: Path) -> None:
    from app.main import create_app

    settings = service_settings("sqlite+aiosqlite:///" + str(tmp_path / "x.db"), tmp_path,
                             host="0.0.0.0")
    with pytest.raises(RuntimeError, match="without STRATA_API_TOKENS"):
        create_app(settings)


def test_log_lines_about_a_job_carry_its_ids() -> None:
    import json

    from app.logs import JsonFormatter, bind, bound

    record = logging.LogRecord("strata.watcher", logging.INFO, __file__, 1, "moved on", None, None)
    with bound(job_id="j-1", stage="ODSToDWD"):
        bind(task_id="t-9")
        line = json.loads(JsonFormatter().format(record))
    assert (line["job_id"], line["stage"], line["task_id"]) == ("j-1", "ODSToDWD", "t-9")
    assert "job_id" not in json.loads(JsonFormatter().format(record))
