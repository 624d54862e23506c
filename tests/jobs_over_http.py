"""Driving jobs through a running service over HTTP: land files, submit, wait, read events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.waiting import wait_for

STOPPED = {"Succeeded", "Failed", "Cancelled"}


async def upload(api: httpx.AsyncClient, files: list[Path], folder: str = "orders") -> None:
    for path in files:
        response = await api.put(f"/v1/landing/{folder}/{path.name}", content=path.read_bytes())
        assert response.status_code in (200, 201), response.text


async def submit(api: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await api.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


async def wait_status(api: httpx.AsyncClient, job_id: str, statuses: set[str] | None = None,
                      within: float = 60.0) -> dict[str, Any]:
    wanted = statuses or STOPPED

    async def reached() -> dict[str, Any] | None:
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        return job if job["status"] in wanted else None

    job: dict[str, Any] = await wait_for(reached, timeout=within, interval=0.05,
                                         message=f"job {job_id} to reach {sorted(wanted)}")
    return job


async def events_of(api: httpx.AsyncClient, job_id: str) -> list[tuple[str, str | None, str]]:
    body = (await api.get(f"/v1/jobs/{job_id}/events")).json()
    return [(e["event"], e["from_status"], e["to_status"]) for e in body["events"]]
