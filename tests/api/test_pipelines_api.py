"""The /v1/pipelines resource through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_jobs_api import assert_problem
from tests.orders_data import EXAMPLES
from tests.service import running_service, service_settings
from tests.waiting import wait_for


def pipeline_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "description": "orders of one day",
        "params": {"source": {"path": "orders/{day}/*.csv", "format": "csv",
                              "options": {"header": True}}},
        "parameters": {"day": {"type": "date", "default": "{run_date}"},
                       "region": {"type": "string", "default": "eu", "pattern": "^[a-z]+$"}},
        "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
        "history": {"succeeded": 3, "failed": 2},
    }
    body.update(extra)
    return body


async def put(api: httpx.AsyncClient, name: str = "orders-daily", **extra: Any) -> httpx.Response:
    return await api.put(f"/v1/pipelines/{name}", json=pipeline_body(**extra))


async def test_put_creates_then_versions_and_the_same_body_is_a_no_op(
    api: httpx.AsyncClient,
) -> None:
    created = await put(api)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/pipelines/orders-daily"
    doc = created.json()
    assert doc["version"] == 1 and doc["name"] == "orders-daily" and doc["suspend"] is False
    assert doc["schedule"]["concurrency_policy"] == "Forbid"
    assert doc["schedule"]["next_fire_at"].endswith("Z") and doc["last_ticks"] == []
    again = await put(api)
    assert again.status_code == 200 and again.json()["version"] == 1
    changed = await put(api, description="orders of one day, again")
    assert changed.status_code == 200 and changed.json()["version"] == 2
    versions = (await api.get("/v1/pipelines/orders-daily/versions")).json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[1]["spec"]["description"] == "orders of one day"
    listed = (await api.get("/v1/pipelines")).json()
    assert listed["total"] == 1 and listed["pipelines"][0]["version"] == 2
    assert (await api.get("/v1/pipelines/orders-daily")).json() == changed.json()


async def test_bad_names_and_bodies_are_422_naming_the_field(api: httpx.AsyncClient) -> None:
    assert_problem(await put(api, name="Orders Daily"), 422)
    assert_problem(await put(api, name="-x"), 422)
    bad = assert_problem(await put(api, schedule={"cron": "0 2 * *"}), 422)
    assert any("schedule" in e["field"] for e in bad["errors"])
    bad = assert_problem(await put(api, parameters={"day": {"type": "date"}}), 422)
    assert "day" in bad["detail"]
    assert_problem(await api.put("/v1/pipelines/x", content=b"{", headers={
        "content-type": "application/json"}), 400)
    assert_problem(await api.get("/v1/pipelines/nope"), 404)


async def test_a_run_is_a_job_that_records_its_pipeline_and_typed_parameters(
    api: httpx.AsyncClient,
) -> None:
    await put(api, schedule=None, parameters={"day": {"type": "date"},
                                              "region": {"type": "string", "default": "eu"}})
    response = await api.post("/v1/pipelines/orders-daily/runs",
                              json={"parameters": {"day": "2026-01-05"}})
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['job_id']}"
    assert job["name"] == "orders-daily"
    assert job["params"]["source"]["path"] == "orders/2026-01-05/*.csv"
    record = job["pipeline"]
    assert record["name"] == "orders-daily" and record["version"] == 1
    assert record["trigger"] == "manual" and record["scheduled_for"] is None
    assert record["parameters"]["day"] == {"type": "date", "value": "2026-01-05"}
    assert record["parameters"]["region"] == {"type": "string", "value": "eu"}
    assert record["parameters"]["run_time"]["type"] == "timestamp"
    assert (await api.get(f"/v1/jobs/{job['job_id']}")).json()["pipeline"] == record
    await api.post("/v1/jobs", json={"name": "one-off", "suspend": True,
                                     "params": {"source": {"path": "x.csv"}}})
    runs = (await api.get("/v1/jobs", params={"pipeline": "orders-daily"})).json()
    assert runs["total"] == 1 and runs["jobs"][0]["job_id"] == job["job_id"]
    one_off = (await api.get("/v1/jobs", params={"name": "one-off"})).json()["jobs"][0]
    assert one_off["pipeline"] is None
    await put(api, schedule=None, description="v2", parameters={"day": {"type": "date"}})
    assert (await api.get(f"/v1/jobs/{job['job_id']}")).json()["pipeline"] == record


@pytest.mark.parametrize(("parameters", "field"), [
    ({}, "parameters.day"),
    ({"day": "2026-13-01"}, "parameters.day"),
    ({"day": "2026-01-05", "colour": "red"}, "parameters.colour"),
    ({"day": "2026-01-05", "region": "../../x"}, "parameters.region"),
    ({"day": "2026-01-05", "region": 5}, "parameters.region"),
])
async def test_a_bad_run_is_422_naming_the_parameter(
    api: httpx.AsyncClient, parameters: dict[str, Any], field: str
) -> None:
    await put(api, schedule=None, parameters={"day": {"type": "date"},
                                              "region": {"type": "string", "default": "eu"}},
              params={"source": {"path": "{region}/{day}/*.csv"}})
    response = await api.post("/v1/pipelines/orders-daily/runs",
                              json={"parameters": parameters})
    problem = assert_problem(response, 422)
    assert field in [e["field"] for e in problem["errors"]], problem
    assert (await api.get("/v1/jobs")).json()["total"] == 0


async def test_runs_take_an_idempotency_key_like_jobs(api: httpx.AsyncClient) -> None:
    await put(api, schedule=None, parameters={"day": {"type": "date"}})
    key = {"Idempotency-Key": "orders-2026-01-05"}
    url = "/v1/pipelines/orders-daily/runs"
    first = await api.post(url, json={"parameters": {"day": "2026-01-05"}}, headers=key)
    again = await api.post(url, json={"parameters": {"day": "2026-01-05"}}, headers=key)
    other = await api.post(url, json={"parameters": {"day": "2026-01-06"}}, headers=key)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert_problem(other, 409)


async def test_suspend_resume_and_delete_keep_the_runs(api: httpx.AsyncClient) -> None:
    assert (await put(api, parameters={},
                      params={"source": {"path": "orders/*.csv"}})).status_code == 201
    suspended = (await api.post("/v1/pipelines/orders-daily/suspend")).json()
    assert suspended["suspend"] is True and suspended["schedule"]["next_fire_at"] is None
    run = await api.post("/v1/pipelines/orders-daily/runs", json={})
    assert run.status_code == 201, "a suspended pipeline still takes manual runs"
    resumed = (await api.post("/v1/pipelines/orders-daily/resume")).json()
    assert resumed["suspend"] is False and resumed["schedule"]["next_fire_at"]
    deleted = await api.delete("/v1/pipelines/orders-daily")
    assert deleted.status_code == 204
    assert_problem(await api.get("/v1/pipelines/orders-daily"), 404)
    assert_problem(await api.post("/v1/pipelines/orders-daily/runs", json={}), 404)
    assert (await api.get(f"/v1/jobs/{run.json()['job_id']}")).status_code == 200


async def test_a_run_goes_through_every_layer_over_the_formatted_path(
    api: httpx.AsyncClient, tmp_path: Path, orders_job: dict[str, Any]
) -> None:
    day = tmp_path / "landing" / "orders" / "2024-01-01"
    day.mkdir(parents=True)
    shutil.copy(EXAMPLES / "orders" / "orders_0001.csv", day)
    params = {**orders_job["params"],
              "source": {**orders_job["params"]["source"], "path": "orders/{day}/*.csv"}}
    await put(api, schedule=None, params=params, parameters={"day": {"type": "date"}})
    job = (await api.post("/v1/pipelines/orders-daily/runs",
                          json={"parameters": {"day": "2024-01-01"}})).json()

    async def finished() -> dict[str, Any] | None:
        doc = dict((await api.get(f"/v1/jobs/{job['job_id']}")).json())
        return doc if doc["status"] in ("Succeeded", "Failed") else None

    done = await wait_for(finished, timeout=60, interval=0.1)
    assert done["status"] == "Succeeded", done["conditions"]
    assert done["results"]["layers"]["ods"]["rows"] > 0


async def test_sql_parameters_are_bound_as_typed_values_not_spliced(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    landing = tmp_path / "landing" / "orders"
    landing.mkdir(parents=True)
    shutil.copy(EXAMPLES / "orders" / "orders_0001.csv", landing)
    params = {"source": {"path": "orders/*.csv", "options": {"header": True,
                                                             "all_varchar": True}},
              "layers": {"dwd": {"sql": "SELECT * FROM ods WHERE region = $region"},
                         "dws": {"sql": "SELECT count(*) AS n, $run_date AS day FROM dwd"}}}
    await put(api, schedule=None, params=params,
              parameters={"region": {"type": "string"}})
    bodies = {"north": "north", "evil": "north' OR '1'='1"}
    counts: dict[str, int] = {}
    for label, region in bodies.items():
        job = (await api.post("/v1/pipelines/orders-daily/runs",
                              json={"parameters": {"region": region}})).json()

        async def finished(job_id: str = job["job_id"]) -> dict[str, Any] | None:
            doc = dict((await api.get(f"/v1/jobs/{job_id}")).json())
            return doc if doc["status"] in ("Succeeded", "Failed") else None

        done = await wait_for(finished, timeout=60, interval=0.1)
        assert done["status"] == "Succeeded", done["conditions"]
        counts[label] = int(done["results"]["layers"]["dwd"]["rows"])
    assert counts["north"] > 0 and counts["evil"] == 0


async def test_a_dry_run_of_a_pipeline_binds_its_parameters_and_creates_nothing(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    landing = tmp_path / "landing" / "orders" / "2026-01-05"
    landing.mkdir(parents=True)
    shutil.copy(EXAMPLES / "orders" / "orders_0001.csv", landing)
    params = {"source": {"path": "orders/{day}/*.csv", "options": {"header": True,
                                                                   "all_varchar": True}},
              "layers": {"dwd": {"sql": "SELECT * FROM ods WHERE region = $region"},
                         "dws": {"sql": "SELECT count(*) AS n, $day AS day FROM dwd"}}}
    await put(api, schedule=None, params=params,
              parameters={"day": {"type": "date"}, "region": {"type": "string"}})
    url = "/v1/pipelines/orders-daily/runs?dry_run=true&sample_rows=200"
    tried = await api.post(url, json={"parameters": {"day": "2026-01-05", "region": "north"}})
    assert tried.status_code == 200, tried.text
    layers = tried.json()["layers"]
    assert layers["ods"]["rows"] == 200
    assert 0 < layers["dwd"]["rows"] < 200
    assert layers["dws"]["sample"] == [{"n": layers["dwd"]["rows"], "day": "2026-01-05"}]
    assert (await api.get("/v1/jobs", params={"pipeline": "orders-daily"})).json()["total"] == 0
    missing = assert_problem(await api.post(url, json={"parameters": {"day": "2026-01-05"}}), 422)
    assert "region" in missing["detail"]


TOKENS = {"alice": "alice-token-123", "bob": "bob-token-4567"}


@pytest.fixture
async def owners_api(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = service_settings(database_url, tmp_path,
                                api_tokens=",".join(f"{o}={t}" for o, t in TOKENS.items()))
    async with running_service(settings) as client:
        yield client


async def test_names_are_per_owner_and_another_owners_pipeline_is_404(
    owners_api: httpx.AsyncClient,
) -> None:
    alice = {"Authorization": f"Bearer {TOKENS['alice']}"}
    bob = {"Authorization": f"Bearer {TOKENS['bob']}"}
    url = "/v1/pipelines/sensors-daily"
    assert (await owners_api.put(url, json=pipeline_body(), headers=alice)).status_code == 201
    for method, path in (("GET", url), ("GET", f"{url}/versions"), ("POST", f"{url}/runs"),
                         ("POST", f"{url}/suspend"), ("DELETE", url)):
        assert_problem(await owners_api.request(method, path, headers=bob), 404)
    assert (await owners_api.get("/v1/pipelines", headers=bob)).json()["total"] == 0
    assert (await owners_api.put(url, json=pipeline_body(), headers=bob)).status_code == 201
    assert (await owners_api.get(url, headers=alice)).json()["owner"] == "alice"


async def test_backfills_through_http(api: httpx.AsyncClient) -> None:
    await put(api, schedule={"cron": "0 2 * * *", "timezone": "UTC", "suspend": True})
    url = "/v1/pipelines/orders-daily/backfills"
    body = {"start": "2026-01-01", "end": "2026-01-03", "max_active": 2}
    created = await api.post(url, json=body)
    assert created.status_code == 201, created.text
    backfill = created.json()
    assert backfill["scheduled_for"] == [f"2026-01-0{d}T02:00:00Z" for d in (1, 2, 3)]
    assert len([r for r in backfill["runs"] if r["job_id"]]) == 2
    assert created.headers["location"] == f"{url}/{backfill['backfill_id']}"
    again = await api.post(url, json=body)
    assert again.status_code == 201 and again.json()["scheduled_for"] == []
    read = (await api.get(f"{url}/{backfill['backfill_id']}")).json()
    assert [r["scheduled_for"] for r in read["runs"]] == backfill["scheduled_for"]
    runs = (await api.get("/v1/jobs", params={"pipeline": "orders-daily"})).json()["jobs"]
    assert {j["pipeline"]["trigger"] for j in runs} == {"backfill"}
    assert {j["params"]["source"]["path"] for j in runs} <= {
        f"orders/2026-01-0{d}/*.csv" for d in (1, 2, 3)}
    assert_problem(await api.get(f"{url}/nope"), 404)
    assert_problem(await api.post(url, json={**body, "start": "soon"}), 422)
    assert_problem(await api.post(url, json={**body, "start": "0001-01-01"}), 422)
    assert_problem(await api.post(url, json={**body, "max_active": 0}), 422)
    await put(api, name="unscheduled", schedule=None)
    refused = assert_problem(await api.post("/v1/pipelines/unscheduled/backfills", json=body), 422)
    assert refused["errors"][0]["field"] == "schedule"
