"""`strata jobs rejects JOB LAYER`: why rows were rejected, against a real running service."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.client import StrataClient
from tests.cli.commands import ORDERS_JOB, strata
from tests.waiting import wait_for

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def succeeded_orders_job(service: httpx.AsyncClient) -> dict[str, Any]:
    created = await service.post("/v1/jobs", json=json.loads(ORDERS_JOB.read_text()))
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]

    async def done() -> dict[str, Any] | None:
        job = dict((await service.get(f"/v1/jobs/{job_id}")).json())
        return job if job["status"] in ("Succeeded", "Failed") else None

    job = await wait_for(done, timeout=60, interval=0.05, message="the orders job to stop")
    assert job["status"] == "Succeeded", job["conditions"]
    return job


@sqlite_only
async def test_rejects_counts_every_reason_and_shows_the_rows(
    service: httpx.AsyncClient, base_url: str, landed: list[Path]
) -> None:
    job = await succeeded_orders_job(service)
    served = (await service.get(f"/v1/jobs/{job['job_id']}/layers/dwd/rejects",
                                params={"limit": 1_000_000})).json()
    expected = Counter(r["_reject_reason"] for r in served)
    assert sum(expected.values()) == job["results"]["layers"]["dwd"]["rejects"] > 5
    assert len(expected) > 1  # the dirty sample fails several checks

    shown = await strata("jobs", "rejects", job["job_id"], "dwd", "--limit", "5",
                         "--url", base_url)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["REASON", "ROWS", "SHARE"]
    counted = {line.split()[0]: int(line.split()[1].replace(",", ""))
               for line in lines[1:1 + len(expected)]}
    assert counted == dict(expected)
    # fourteen columns do not fit in 80: one block per row, every column named with its value
    blocks = shown.stdout.split("\nrow ")[1:]
    assert [b.split()[0] for b in blocks] == ["1", "2", "3", "4", "5"]
    assert blocks[0].split()[1:3] == ["_reject_reason", served[0]["_reject_reason"]]
    assert f"order_id {served[0]['order_id']}" in " ".join(blocks[0].split())
    assert lines[-1] == f"rows 1-5 of {sum(expected.values()):,}"

    as_json = await strata("jobs", "rejects", job["job_id"], "dwd", "--json", "--limit", "3",
                           "--offset", "2", "--url", base_url)
    document = json.loads(as_json.stdout)
    assert (document["layer"], document["total"]) == ("dwd", sum(expected.values()))
    assert document["reasons"] == dict(expected) and document["rows"] == served[2:5]

    wide = await strata("jobs", "rejects", job["job_id"], "dwd", "--limit", "2",
                        "--url", base_url, env={"COLUMNS": "400"})
    header = next(line for line in wide.stdout.splitlines() if "_reject_reason" in line)
    assert header.split()[:2] == ["_reject_reason", "order_id"]  # a table when it fits

    none = await strata("jobs", "rejects", job["job_id"], "dws", "--url", base_url)
    assert none.exit_code == 0 and none.stdout.strip() == "no rejected rows in dws"

    def counted_in_small_pages() -> dict[str, int]:
        with StrataClient(base_url) as client:
            return client.reject_reasons(job["job_id"], "dwd", page=7)

    assert await asyncio.to_thread(counted_in_small_pages) == dict(expected)


@sqlite_only
async def test_rejects_of_an_unknown_layer_or_job_are_errors(base_url: str) -> None:
    assert (await strata("jobs", "rejects", "some-job", "landing", "--url", base_url)
            ).exit_code == 2
    missing = await strata("jobs", "rejects", "no-such-job", "dwd", "--url", base_url)
    assert missing.exit_code == 3 and "Job not found (404)" in missing.stderr
