"""`/v1/webhooks` over real HTTP: the secret shown once, owners kept apart, internal addresses
refused with authentication on, and a job's end reaching a real receiver signed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from tests.jobs_over_http import submit, upload, wait_status
from tests.orders_data import generate, write_csv
from tests.receivers import Receiver, running_receiver
from tests.service import running_service, service_settings
from tests.waiting import wait_for

TOKENS = "alice=alice-token-1,bob=bob-token-12"
ALICE = {"Authorization": "Bearer alice-token-1"}
BOB = {"Authorization": "Bearer bob-token-12"}


@pytest.fixture
async def authed(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = service_settings(database_url, tmp_path, api_tokens=TOKENS)
    async with running_service(settings) as client:
        yield client


async def create(api: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None,
                 **body: Any) -> httpx.Response:
    return await api.post("/v1/webhooks", headers=headers,
                          json={"url": url, "events": ["job.succeeded", "job.cancelled"], **body})


async def test_create_shows_the_secret_once_then_list_and_delete(api: httpx.AsyncClient) -> None:
    created = await create(api, "http://127.0.0.1:9/hook", pipeline="nightly")
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_")
    assert created.headers["location"] == f"/v1/webhooks/{hook['webhook_id']}"
    assert (hook["events"], hook["pipeline"]) == (["job.succeeded", "job.cancelled"], "nightly")
    listed = (await api.get("/v1/webhooks")).json()
    assert listed["total"] == 1
    assert "secret" not in listed["webhooks"][0]
    assert listed["webhooks"][0]["webhook_id"] == hook["webhook_id"]
    one = await api.get(f"/v1/webhooks/{hook['webhook_id']}")
    assert one.status_code == 200 and "secret" not in one.json()
    assert (await api.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries")).json() == {
        "total": 0, "deliveries": []}
    assert (await api.delete(f"/v1/webhooks/{hook['webhook_id']}")).status_code == 204
    assert (await api.delete(f"/v1/webhooks/{hook['webhook_id']}")).status_code == 404
    assert (await api.get("/v1/webhooks")).json() == {"total": 0, "webhooks": []}


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://example.com/x", "events": ["job.failed"]}, "body.url"),
    ({"url": "http://a\u0000b/x", "events": ["job.failed"]}, "body.url"),
    ({"url": "http://example.com/x", "events": ["job.exploded"]}, "body.events.0"),
    ({"url": "http://example.com/x", "events": []}, "body.events"),
    ({"events": ["job.failed"]}, "body.url"),
    ({"url": "http://example.com/x", "events": ["job.failed"], "secret": "mine"}, "body.secret"),
])
async def test_a_bad_webhook_is_a_problem_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], field: str,
) -> None:
    response = await api.post("/v1/webhooks", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]


INTERNAL = [
    "http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/hook", "http://[::1]/hook",
    "http://[fe80::1]/hook", "http://[fd12::1]/hook", "http://[::ffff:10.0.0.1]/hook",
    "http://localhost:8000/hook", "https://LOCALHOST/hook",
]


async def test_internal_addresses_are_refused_at_create_with_authentication_on(
    authed: httpx.AsyncClient,
) -> None:
    for url in INTERNAL:
        response = await create(authed, url, ALICE)
        assert response.status_code == 422, (url, response.text)
        problem = response.json()
        assert problem["errors"][0]["field"] == "body.url"
        assert "refused" in problem["detail"]
    too_long = await create(authed, f"http://{'a' * 300}.example.com/hook", ALICE)
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "body.url"
    assert (await authed.get("/v1/webhooks", headers=ALICE)).json()["total"] == 0


async def test_internal_addresses_are_allowed_when_configured(
    database_url: str, tmp_path: Path,
) -> None:
    settings = service_settings(database_url, tmp_path, api_tokens=TOKENS,
                                webhook_allow_private=True)
    async with running_service(settings) as api:
        assert (await create(api, "http://10.1.2.3/hook", ALICE)).status_code == 201


async def test_without_authentication_loopback_receivers_are_allowed(
    api: httpx.AsyncClient,
) -> None:
    assert (await create(api, "http://127.0.0.1:9/hook")).status_code == 201


async def test_another_owners_webhook_is_not_found(authed: httpx.AsyncClient) -> None:
    hook = (await create(authed, "http://93.184.215.14/hook", ALICE)).json()
    assert (await authed.get("/v1/webhooks", headers=BOB)).json()["total"] == 0
    for path in (f"/v1/webhooks/{hook['webhook_id']}",
                 f"/v1/webhooks/{hook['webhook_id']}/deliveries"):
        assert (await authed.get(path, headers=BOB)).status_code == 404
    assert (await authed.delete(f"/v1/webhooks/{hook['webhook_id']}",
                                headers=BOB)).status_code == 404
    assert (await authed.get("/v1/webhooks", headers=ALICE)).json()["total"] == 1
    assert (await authed.get("/v1/webhooks")).status_code == 401


async def test_a_succeeded_job_reaches_the_receiver_signed(
    database_url: str, tmp_path: Path, orders_job: dict[str, Any],
) -> None:
    receiver = Receiver()
    settings = service_settings(database_url, tmp_path, webhook_poll_seconds=0.05)
    files = write_csv(generate(500, seed=2), tmp_path / "src", files=1)
    async with running_receiver(receiver) as url, running_service(settings) as api:
        hook = (await api.post("/v1/webhooks", json={
            "url": url, "events": ["job.succeeded", "job.stage_done"]})).json()
        await upload(api, files)
        job_id = await submit(api, orders_job)
        job = await wait_status(api, job_id)
        assert job["status"] == "Succeeded"
        await wait_for(lambda: len(receiver.received) == 5, timeout=10,
                       message="four stage_done and one succeeded")
        messages = [Verifier(hook["secret"]).verify(r.body, r.headers)
                    for r in receiver.received]
        assert sorted(m["type"] for m in messages) == ["job.stage_done"] * 4 + ["job.succeeded"]
        [done] = [m for m in messages if m["type"] == "job.succeeded"]
        assert done["data"] == job, "the document of the job after the change"

        async def all_delivered() -> list[dict[str, Any]] | None:
            body = (await api.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries")).json()
            rows: list[dict[str, Any]] = body["deliveries"]
            return rows if all(d["status"] == "delivered" for d in rows) else None

        rows = await wait_for(all_delivered, timeout=5)
        assert {d["id"] for d in rows} == set(receiver.ids())
        assert all(d["attempts"] == 1 and d["last_status"] == 200 and d["job_id"] == job_id
                   for d in rows)
        metrics = (await api.get("/metrics")).text
        assert "strata_webhook_deliveries_sent_total 5.0" in metrics


async def test_a_cancel_through_the_api_reaches_only_the_owners_receiver(
    database_url: str, tmp_path: Path, orders_job: dict[str, Any],
) -> None:
    alice_rx, bob_rx = Receiver(), Receiver()
    settings = service_settings(database_url, tmp_path, api_tokens=TOKENS,
                                webhook_allow_private=True, webhook_poll_seconds=0.05)
    async with running_receiver(alice_rx) as alice_url, \
            running_receiver(bob_rx) as bob_url, running_service(settings) as api:
        await create(api, alice_url, ALICE, events=["job.cancelled"])
        bob_hook = (await create(api, bob_url, BOB, events=["job.cancelled"])).json()
        created = await api.post("/v1/jobs", headers=ALICE, json={**orders_job, "suspend": True})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        cancelled = await api.post(f"/v1/jobs/{job_id}/cancel", headers=ALICE)
        assert cancelled.status_code == 200, cancelled.text
        await wait_for(lambda: alice_rx.received, timeout=10, message="alice's delivery")
        [got] = alice_rx.received
        assert httpx.Response(200, content=got.body).json()["data"]["job_id"] == job_id
        assert bob_rx.received == []
        bobs = await api.get(f"/v1/webhooks/{bob_hook['webhook_id']}/deliveries", headers=BOB)
        assert bobs.json()["total"] == 0


async def test_a_job_the_watcher_fails_reaches_the_receiver_with_why(
    database_url: str, tmp_path: Path, orders_job: dict[str, Any],
) -> None:
    receiver = Receiver()
    settings = service_settings(database_url, tmp_path, webhook_poll_seconds=0.05)
    failing = {**orders_job, "params": {**orders_job["params"], "retries": 0,
                                        "source": {"path": "nothing/*.csv", "format": "csv"}}}
    async with running_receiver(receiver) as url, running_service(settings) as api:
        hook = (await api.post("/v1/webhooks", json={"url": url, "events": ["job.failed"]})).json()
        job_id = await submit(api, failing)
        job = await wait_status(api, job_id)
        assert job["status"] == "Failed"
        await wait_for(lambda: receiver.received, timeout=10, message="the job.failed delivery")
    [got] = receiver.received
    message = Verifier(hook["secret"]).verify(got.body, got.headers)
    assert message["type"] == "job.failed" and message["data"] == job
    assert any(c["status"] == "False" for c in message["data"]["conditions"])
