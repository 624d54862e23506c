"""Incremental input through HTTP: files land, each run takes only the new ones, and a run with
nothing new is a 409 naming the reason. The real service, executor and DuckDB."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from app.api.deps import services_of
from app.store.models import LandedFileRecord
from tests.api.test_jobs_api import assert_problem
from tests.waiting import wait_for

PIPELINE = {"params": {"source": {"path": "readings/*.csv", "options": {"header": True},
                                  "mode": "new_files"}}}


async def finished(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        doc = dict((await api.get(f"/v1/jobs/{job_id}")).json())
        return doc if doc["status"] in ("Succeeded", "Failed") else None

    return await wait_for(done, timeout=60, interval=0.1)


def csv(day: str, n: int) -> bytes:
    return ("day,device,value\n" + "".join(f"{day},d{i},{i}\n" for i in range(n))).encode()


async def test_each_run_reads_only_the_files_that_landed_since(api: httpx.AsyncClient) -> None:
    assert (await api.put("/v1/pipelines/readings", json=PIPELINE)).status_code == 201
    refused = assert_problem(await api.post("/v1/pipelines/readings/runs"), 409)
    assert refused["reason"] == "NoNewInput"

    put = await api.put("/v1/landing/readings/d1.csv", content=csv("2026-01-01", 3))
    assert put.status_code == 201
    sessions = services_of(api.app).jobs.sessions  # type: ignore[attr-defined]
    async with sessions() as session:
        [record] = (await session.execute(select(LandedFileRecord))).scalars().all()
    assert (record.owner, record.path) == ("local", "readings/d1.csv")
    assert record.size == len(csv("2026-01-01", 3))

    first = await api.post("/v1/pipelines/readings/runs")
    assert first.status_code == 201, first.text
    done = await finished(api, first.json()["job_id"])
    assert done["status"] == "Succeeded", done["conditions"]
    assert [i["path"] for i in done["results"]["inputs"]] == ["readings/d1.csv"]
    assert done["results"]["inputs"][0]["sha256"] == record.sha256
    assert done["results"]["layers"]["ods"]["rows"] == 3

    assert (await api.post("/v1/pipelines/readings/runs")).status_code == 409
    await api.put("/v1/landing/readings/d2.csv", content=csv("2026-01-02", 5))
    second = await finished(api, (await api.post("/v1/pipelines/readings/runs")).json()["job_id"])
    assert second["status"] == "Succeeded", second["conditions"]
    assert [i["path"] for i in second["results"]["inputs"]] == ["readings/d2.csv"]
    assert second["results"]["layers"]["ods"]["rows"] == 5  # d1 is not read again
    assert second["params"]["source"]["files"] == ["readings/d2.csv"]


async def test_a_plain_job_asking_for_new_files_is_422_naming_the_field(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/jobs", json={"name": "x", "params": {
        "source": {"path": "readings/*.csv", "mode": "new_files"}}})
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["field"] == "params.source.mode"
