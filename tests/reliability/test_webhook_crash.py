"""kill -9 right after a job's final transition commits, before any webhook was sent: after a
restart the receiver still gets the signed `job.succeeded`, once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook as Verifier

from app.store.db import create_engine
from app.store.models import Job, WebhookDelivery
from tests.jobs_over_http import submit, upload, wait_status
from tests.orders_data import generate, write_csv
from tests.processes import StrataProcess
from tests.receivers import Receiver, running_receiver
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

SUCCEED_COMMIT = "after_transition_commit:5"  # start, three stage_done, the last with succeed


async def stored(database_url: str) -> tuple[list[Job], list[WebhookDelivery]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            jobs = list((await conn.execute(select(Job))).all())
            rows = list((await conn.execute(select(WebhookDelivery))).all())
    finally:
        await engine.dispose()
    return jobs, rows  # type: ignore[return-value]


async def test_a_crash_between_the_final_transition_and_the_send_delays_the_webhook(
    database_url: str, make_process: Callable[..., StrataProcess], tmp_path: Path,
    orders_job: dict[str, Any],
) -> None:
    receiver = Receiver()
    files = write_csv(generate(500, seed=4), tmp_path / "src", files=1)
    service = make_process("serve", database_url, STRATA_WEBHOOK_POLL_SECONDS="0.1")
    async with running_receiver(receiver) as url:
        service.start(STRATA_CRASH_AT=SUCCEED_COMMIT)
        await service.ready()
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
            hook = (await api.post("/v1/webhooks", json={
                "url": url, "events": ["job.succeeded"]})).json()
            await upload(api, files)
            job_id = await submit(api, orders_job)
        assert await service.exited() == 137, "the failpoint was not reached"

        [job], [row] = await stored(database_url)
        assert job.status == "Succeeded"
        assert (row.type, row.status, row.attempts) == ("job.succeeded", "pending", 0)
        assert receiver.received == []

        service.start()
        await service.ready()
        await wait_for(lambda: receiver.received, timeout=30, message="the delivery")
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as api:
            finished = await wait_status(api, job_id)

            async def recorded() -> list[dict[str, Any]] | None:
                rows: list[dict[str, Any]] = (await api.get(
                    f"/v1/webhooks/{hook['webhook_id']}/deliveries")).json()["deliveries"]
                return rows if rows and rows[0]["status"] != "pending" else None

            deliveries = await wait_for(recorded, timeout=10, message="the attempt recorded")
        service.stop()
    [got] = receiver.received
    message = Verifier(hook["secret"]).verify(got.body, got.headers)
    assert message["type"] == "job.succeeded" and message["data"] == finished
    assert got.headers["webhook-id"] == row.id
    assert [(d["id"], d["status"], d["attempts"]) for d in deliveries] == [
        (row.id, "delivered", 1)]
