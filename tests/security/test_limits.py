"""Limits: body size, upload size, per-owner jobs in flight and create rate (429 + Retry-After)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.service import running_service, service_settings


def job(name: str = "j") -> dict[str, object]:
    return {"name": name, "suspend": True, "params": {"source": {"path": "x/*.csv"}}}


async def test_a_json_body_over_the_limit_is_413(database_url: str, tmp_path: Path) -> None:
    settings = service_settings(database_url, tmp_path, max_body_bytes=4096)
    async with running_service(settings) as api:
        big = job()
        big["description"] = "x" * 3000
        big["params"] = {"source": {"path": "x/*.csv"},
                         "layers": {"dwd": {"sql": "SELECT " + "1," * 2000 + "1 FROM ods"}}}
        response = await api.post("/v1/jobs", json=big)
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/problem+json")
        assert (await api.get("/v1/jobs")).json()["total"] == 0


async def test_an_upload_over_the_limit_is_413_and_leaves_nothing(
    database_url: str, tmp_path: Path
) -> None:
    settings = service_settings(database_url, tmp_path, max_upload_bytes=1000)
    async with running_service(settings) as api:
        response = await api.put("/v1/landing/big.csv", content=b"x" * 5000)
        assert response.status_code == 413
        assert (await api.get("/v1/landing")).json()["files"] == []
        assert list((tmp_path / "landing").iterdir()) == []


async def test_too_many_jobs_in_flight_is_429_with_retry_after(
    database_url: str, tmp_path: Path
) -> None:
    settings = service_settings(database_url, tmp_path, max_jobs_in_flight=2)
    async with running_service(settings) as api:
        for i in range(2):
            assert (await api.post("/v1/jobs", json=job(f"j{i}"))).status_code == 201
        refused = await api.post("/v1/jobs", json=job("one-too-many"))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "in flight" in refused.json()["detail"]
        first = (await api.get("/v1/jobs")).json()["jobs"][0]["job_id"]
        await api.post(f"/v1/jobs/{first}/cancel")
        assert (await api.post("/v1/jobs", json=job("fits-again"))).status_code == 201


async def test_racing_creates_may_pass_the_in_flight_check_together_but_never_undercount(
    database_url: str, tmp_path: Path
) -> None:
    """The check is a read before the create's transaction: creates racing past it together may
    each be accepted (so the limit can be exceeded by the racers but one), none is refused while
    the owner is below the limit, and once they settle the limit holds for the next create."""
    settings = service_settings(database_url, tmp_path, max_jobs_in_flight=3)
    async with running_service(settings) as api:
        assert (await api.post("/v1/jobs", json=job("first"))).status_code == 201
        racers = await asyncio.gather(*(api.post("/v1/jobs", json=job(f"r{i}")) for i in range(8)))
        codes = sorted(r.status_code for r in racers)
        assert set(codes) <= {201, 429} and codes.count(201) >= 2
        assert (await api.get("/v1/jobs")).json()["total"] == 1 + codes.count(201)
        assert (await api.post("/v1/jobs", json=job("after"))).status_code == 429


async def test_creating_faster_than_the_rate_is_429(database_url: str, tmp_path: Path) -> None:
    settings = service_settings(database_url, tmp_path, creates_per_minute=3)
    async with running_service(settings) as api:
        codes = [(await api.post("/v1/jobs", json=job(f"r{i}"))).status_code for i in range(5)]
        assert codes[:3] == [201, 201, 201] and codes[3:] == [429, 429]


async def test_limit_and_sql_length_bounds_are_422(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/jobs", params={"limit": 100000})).status_code == 422
    body = job()
    body["params"] = {"source": {"path": "x/*.csv"},
                      "layers": {"dwd": {"sql": "SELECT 1 " + " " * 100_001}}}
    response = await api.post("/v1/jobs", json=body)
    assert response.status_code in (413, 422)
