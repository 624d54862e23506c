"""The /v1/jobs resource, through HTTP, on SQLite and PostgreSQL.

Jobs here are created suspended (unless the test is about running), so the watcher leaves them in
Pending and each test sees exactly the state it sets up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

PROBLEM = "application/problem+json"


def job_body(name: str = "orders", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "suspend": True,
        "params": {"source": {"path": "orders/*.csv", "format": "csv",
                              "options": {"header": True}}},
    }
    body.update(extra)
    return body


async def create(api: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await api.post("/v1/jobs", json=job_body(**extra))
    assert response.status_code == 201, response.text
    return dict(response.json())


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = dict(response.json())
    assert body["status"] == status and body["title"] and "type" in body
    return body


async def test_create_returns_201_location_and_the_job_with_defaults_filled(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/jobs", json=job_body())
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['job_id']}"
    assert job["status"] == "Pending" and job["suspend"] is True
    assert job["params"]["retries"] == 3 and job["params"]["timeout_seconds"] == 3600
    assert job["params"]["layers"]["ds"]["output"] == {"format": "parquet"}
    assert job["results"] == {} and job["conditions"] == []
    assert job["created_at"].endswith(("Z", "+00:00"))
    fetched = await api.get(response.headers["location"])
    assert fetched.json() == job


async def test_idempotency_key_replays_the_same_job_and_refuses_another_body(
    api: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "order-run-2024-01-01"}
    first = await api.post("/v1/jobs", json=job_body(), headers=headers)
    again = await api.post("/v1/jobs", json=job_body(), headers=headers)
    other = await api.post("/v1/jobs", json=job_body(name="other"), headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert "Idempotency-Key" in assert_problem(other, 409)["detail"]
    assert (await api.get("/v1/jobs")).json()["total"] == 1


async def test_concurrent_creates_with_one_key_make_exactly_one_job(
    api: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(api.post("/v1/jobs", json=job_body(), headers=headers) for _ in range(8))
    )
    assert sorted({r.status_code for r in responses}) in ([200, 201], [201])
    assert len({r.json()["job_id"] for r in responses}) == 1
    assert (await api.get("/v1/jobs")).json()["total"] == 1


async def test_list_is_newest_first_with_filters_and_paging(api: httpx.AsyncClient) -> None:
    ids = [(await create(api, name=f"job-{i % 2}"))["job_id"] for i in range(5)]
    listed = (await api.get("/v1/jobs")).json()
    assert listed["total"] == 5
    assert [j["job_id"] for j in listed["jobs"]] == ids[::-1]
    named = (await api.get("/v1/jobs", params={"name": "job-0"})).json()
    assert named["total"] == 3 and {j["name"] for j in named["jobs"]} == {"job-0"}
    page = (await api.get("/v1/jobs", params={"limit": 2, "offset": 1})).json()
    assert [j["job_id"] for j in page["jobs"]] == ids[::-1][1:3] and page["total"] == 5
    pending = (await api.get("/v1/jobs", params={"status": "Pending"})).json()
    assert pending["total"] == 5
    assert (await api.get("/v1/jobs", params={"status": "Failed"})).json()["total"] == 0


async def test_list_bounds_and_unknown_status_are_422_naming_the_parameter(
    api: httpx.AsyncClient,
) -> None:
    for params, field in (({"limit": 0}, "query.limit"), ({"limit": 501}, "query.limit"),
                          ({"offset": -1}, "query.offset"), ({"status": "Done"}, "query.status")):
        body = assert_problem(await api.get("/v1/jobs", params=params), 422)
        assert [e["field"] for e in body["errors"]] == [field]


async def test_unknown_job_is_404_problem(api: httpx.AsyncClient) -> None:
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/cancel"),
                         ("GET", "/events"), ("GET", "/output")):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "PATCH" else {}
        response = await api.request(method, f"/v1/jobs/nope{path}", **kwargs)
        assert_problem(response, 404)


async def test_malformed_json_is_400_and_schema_errors_are_422_naming_each_field(
    api: httpx.AsyncClient,
) -> None:
    bad_json = await api.post("/v1/jobs", content=b'{"name": ',
                              headers={"content-type": "application/json"})
    assert_problem(bad_json, 400)
    body = job_body()
    body["params"]["retries"] = -1
    body["params"]["source"]["path"] = "../etc/passwd"
    body["params"]["surprise"] = 1
    problem = assert_problem(await api.post("/v1/jobs", json=body), 422)
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"body.params.retries", "body.params.source.path", "body.params.surprise"}
    missing = assert_problem(await api.post("/v1/jobs", json={"name": "x"}), 422)
    assert [e["field"] for e in missing["errors"]] == ["body.params"]
    assert (await api.get("/v1/jobs")).json()["total"] == 0


async def test_source_paths_that_leave_the_landing_directory_are_refused(
    api: httpx.AsyncClient,
) -> None:
    for path in ("/etc/passwd", "../x.csv", "a/../../x.csv", "~/x.csv", "a\\..\\x.csv", ".",
                 "a\x00.csv"):
        body = job_body()
        body["params"]["source"]["path"] = path
        problem = assert_problem(await api.post("/v1/jobs", json=body), 422)
        assert problem["errors"][0]["field"] == "body.params.source.path", path


async def test_patch_renames_describes_and_suspends(api: httpx.AsyncClient) -> None:
    job = await create(api)
    url = f"/v1/jobs/{job['job_id']}"
    patched = (await api.patch(url, json={"name": "renamed", "description": "d"})).json()
    assert (patched["name"], patched["description"]) == ("renamed", "d")
    resumed = (await api.patch(url, json={"suspend": False})).json()
    assert resumed["suspend"] is False
    assert_problem(await api.patch(url, json={}), 422)
    assert_problem(await api.patch(url, json={"status": "Succeeded"}), 422)
    for loose in ("yes", "true", 1, 0):
        problem = assert_problem(await api.patch(url, json={"suspend": loose}), 422)
        assert problem["errors"][0]["field"] == "body.suspend", loose
    assert_problem(await api.post("/v1/jobs", json=job_body(suspend="false")), 422)
    for loose in ("3", True):
        body = job_body()
        body["params"]["retries"] = loose
        problem = assert_problem(await api.post("/v1/jobs", json=body), 422)
        assert problem["errors"][0]["field"] == "body.params.retries", loose


async def test_a_405_names_every_method_of_the_path(api: httpx.AsyncClient) -> None:
    job = await create(api)
    for path, methods in ((f"/v1/jobs/{job['job_id']}", "DELETE, GET, PATCH"),
                          ("/v1/jobs", "GET, POST"),
                          ("/v1/landing/a.csv", "PUT")):
        response = await api.request("OPTIONS", path)
        assert_problem(response, 405)
        assert response.headers["allow"] == methods, path


async def test_actions_follow_the_machine_and_illegal_ones_are_409_naming_the_state(
    api: httpx.AsyncClient,
) -> None:
    job = await create(api)
    url = f"/v1/jobs/{job['job_id']}"
    assert "suspend" not in job["allowed_actions"]
    assert "state Pending" in assert_problem(await api.post(f"{url}/suspend"), 409)["detail"]
    cancelled = (await api.post(f"{url}/cancel")).json()
    assert cancelled["status"] == "Cancelled" and cancelled["ended_at"]
    assert cancelled["allowed_actions"] == ["retry"]
    assert "state Cancelled" in assert_problem(await api.post(f"{url}/cancel"), 409)["detail"]
    assert_problem(await api.post(f"{url}/suspend"), 409)
    retried = (await api.post(f"{url}/retry")).json()
    assert retried["status"] == "Pending" and retried["ended_at"] is None
    assert retried["allowed_actions"] == job["allowed_actions"]
    assert_problem(await api.post(f"{url}/retry"), 409)
    events = (await api.get(f"{url}/events")).json()["events"]
    assert [(e["event"], e["from_status"], e["to_status"]) for e in events] == [
        ("create", None, "Pending"),
        ("cancel", "Pending", "Cancelled"),
        ("retry", "Cancelled", "Pending"),
    ]


async def test_delete_removes_the_job_and_its_events(api: httpx.AsyncClient) -> None:
    job = await create(api)
    url = f"/v1/jobs/{job['job_id']}"
    assert (await api.delete(url)).status_code == 204
    assert_problem(await api.get(url), 404)
    assert_problem(await api.get(f"{url}/events"), 404)


async def test_output_of_a_job_that_has_not_succeeded_is_409(api: httpx.AsyncClient) -> None:
    job = await create(api)
    problem = assert_problem(await api.get(f"/v1/jobs/{job['job_id']}/output"), 409)
    assert "Pending" in problem["detail"]


async def test_fsm_is_served_as_mermaid(api: httpx.AsyncClient) -> None:
    body = (await api.get("/v1/fsm")).json()
    assert body["format"] == "mermaid" and body["diagram"].startswith("stateDiagram-v2")
    assert body["states"][0] == "Pending" and "Succeeded" in body["states"]
    assert body["initial"] == "Pending"
    edges = {(t["source"], t["event"], t["target"]) for t in body["transitions"]}
    assert ("Pending", "start", "LandingToODS") in edges
    assert ("Failed", "retry", "ODSToDWD") in edges
    assert not any(source == "Succeeded" for source, _, _ in edges)


async def test_health_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json()["status"] == "ok"
    ready = await api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "executor": "ok"}
