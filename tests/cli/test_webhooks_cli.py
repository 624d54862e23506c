"""`strata webhooks add|ls|rm|deliveries` against a running service and a real receiver."""

from __future__ import annotations

import json
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook as Verifier

from tests.cli.commands import strata
from tests.receivers import Receiver, running_receiver
from tests.waiting import wait_for


async def test_add_list_deliveries_and_remove(
    service: httpx.AsyncClient, base_url: str, orders_job: dict[str, Any],
) -> None:
    receiver = Receiver()
    async with running_receiver(receiver) as url:
        added = await strata("webhooks", "add", url, "--event", "job.cancelled", "--url",
                             base_url, "--json")
        assert added.exit_code == 0, added.output
        hook = json.loads(added.stdout)
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["job.cancelled"]

        listed = await strata("webhooks", "ls", "--url", base_url)
        assert listed.exit_code == 0 and hook["webhook_id"] in listed.stdout
        assert "whsec_" not in listed.stdout

        job = (await service.post("/v1/jobs", json={**orders_job, "suspend": True})).json()
        await service.post(f"/v1/jobs/{job['job_id']}/cancel")
        await wait_for(lambda: receiver.received, timeout=10, message="the delivery")
        Verifier(hook["secret"]).verify(receiver.received[0].body, receiver.received[0].headers)

        async def shown() -> str | None:
            result = await strata("webhooks", "deliveries", hook["webhook_id"], "--url",
                                  base_url, env={"COLUMNS": "200"})
            return result.stdout if "delivered" in result.stdout else None

        table = await wait_for(shown, timeout=10, message="the delivery listed as delivered")
        assert "job.cancelled" in table and job["job_id"] in table

    removed = await strata("webhooks", "rm", hook["webhook_id"], "--url", base_url)
    assert removed.exit_code == 0 and "removed" in removed.stdout
    again = await strata("webhooks", "rm", hook["webhook_id"], "--url", base_url)
    assert again.exit_code == 3 and "Webhook not found" in again.stderr
    assert (await strata("webhooks", "ls", "--url", base_url)).stdout.strip() == "no webhooks"


async def test_a_bad_event_is_a_usage_error(base_url: str) -> None:
    result = await strata("webhooks", "add", "http://127.0.0.1:9/h", "--event", "job.exploded",
                          "--url", base_url)
    assert result.exit_code == 2
