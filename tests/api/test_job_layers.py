"""Looking inside a run over HTTP: any layer's rows, its rejects, and the data-quality gates.

A small sensor job runs for real (embedded executor, DuckDB, real files) on SQLite and on
PostgreSQL; the gates' failures are judged once, not retried.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx

from tests.api.test_jobs_api import assert_problem, create
from tests.waiting import wait_for

READINGS = "device_id,reading\n" + "".join(
    f"d{i:02d},{'oops' if i % 4 == 0 else f'{i}.5'}\n" for i in range(1, 13))
"""Twelve readings; d04, d08 and d12 are no number (three rejects, 25 %)."""

DWD_SQL = "SELECT device_id, TRY_CAST(reading AS DOUBLE) AS reading FROM ods"


def sensor_params(**dwd: Any) -> dict[str, Any]:
    return {
        "source": {"path": "sensors/*.csv", "format": "csv",
                   "options": {"header": True, "all_varchar": True}},
        "layers": {
            "dwd": {"sql": DWD_SQL,
                    "checks": [{"name": "no_reading", "expr": "reading IS NOT NULL"}], **dwd},
            "ds": {"sql": "SELECT device_id, reading FROM dws ORDER BY device_id"},
        },
    }


async def run_job(api: httpx.AsyncClient, **dwd: Any) -> dict[str, Any]:
    landed = await api.put("/v1/landing/sensors/readings.csv", content=READINGS.encode())
    assert landed.status_code in (200, 201), landed.text
    job = await create(api, suspend=False, params=sensor_params(**dwd))

    async def stopped() -> dict[str, Any] | None:
        body = dict((await api.get(f"/v1/jobs/{job['job_id']}")).json())
        return body if body["status"] in ("Succeeded", "Failed", "Cancelled") else None

    return await wait_for(stopped, timeout=60, interval=0.05, message="the job to stop")


def condition(job: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in job["conditions"] if c["type"] == type_)


async def test_every_layer_and_its_rejects_as_json_and_csv_paged_stably(
    api: httpx.AsyncClient,
) -> None:
    job = await run_job(api)
    assert job["status"] == "Succeeded", job["conditions"]
    url = f"/v1/jobs/{job['job_id']}/layers"

    ods = await api.get(f"{url}/ods")
    assert ods.status_code == 200 and ods.headers["content-type"].startswith("application/json")
    assert len(ods.json()) == 12
    assert {"device_id", "reading", "_source_file", "_row_number"} <= set(ods.json()[0])

    dwd = (await api.get(f"{url}/dwd")).json()
    assert sorted(r["device_id"] for r in dwd) == [f"d{i:02d}" for i in range(1, 13)
                                                   if i % 4]
    pages = [(await api.get(f"{url}/dwd", params={"limit": 4, "offset": o})).json()
             for o in (0, 4, 8)]
    assert [len(p) for p in pages] == [4, 4, 1] and [r for p in pages for r in p] == dwd
    assert (await api.get(f"{url}/dwd", params={"limit": 4, "offset": 4})).json() == pages[1]

    as_csv = await api.get(f"{url}/ds", params={"format": "csv", "limit": 2, "offset": 1})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(as_csv.text))) == [
        ["device_id", "reading"], ["d02", "2.5"], ["d03", "3.5"]]

    rejects = (await api.get(f"{url}/dwd/rejects")).json()
    assert sorted((r["device_id"], r["reading"], r["_reject_reason"]) for r in rejects) == [
        ("d04", None, "no_reading"), ("d08", None, "no_reading"), ("d12", None, "no_reading")]
    rejects_csv = (await api.get(f"{url}/dwd/rejects", params={"format": "csv"})).text
    assert rejects_csv.splitlines()[0] == "device_id,reading,_reject_reason"

    # a layer without checks has no rejects: an empty result, not an error
    assert (await api.get(f"{url}/dws/rejects")).json() == []
    empty_csv = await api.get(f"{url}/dws/rejects", params={"format": "csv"})
    assert empty_csv.status_code == 200 and empty_csv.text == ""


async def test_an_unknown_layer_or_bad_paging_is_a_422_problem(api: httpx.AsyncClient) -> None:
    job = await create(api)
    url = f"/v1/jobs/{job['job_id']}/layers"
    for path, params in (("/landing", {}), ("/ods_rejects", {}), ("/ods", {"limit": 0}),
                         ("/ods", {"offset": -1}), ("/ods", {"format": "xml"}),
                         ("/nope/rejects", {})):
        assert_problem(await api.get(url + path, params=params), 422)
    assert_problem(await api.get("/v1/jobs/no-such-job/layers/ods"), 404)


async def test_a_layer_not_yet_written_is_a_409_naming_it_and_the_job_status(
    api: httpx.AsyncClient,
) -> None:
    job = await create(api)  # suspended: stays Pending
    for path, what in (("dwd", "layer dwd"), ("dwd/rejects", "the rejects of layer dwd")):
        problem = assert_problem(await api.get(f"/v1/jobs/{job['job_id']}/layers/{path}"), 409)
        assert problem["title"] == "Layer not written"
        assert what in problem["detail"] and "Pending" in problem["detail"]


async def test_too_many_rejects_fails_at_once_and_the_rejects_stay_readable(
    api: httpx.AsyncClient,
) -> None:
    job = await run_job(api, reject_limit=0.2)

    assert job["status"] == "Failed"
    failed = condition(job, "Failed")
    assert failed["reason"] == "TooManyRejects"
    assert "dwd: 3 of 12 rows rejected (25.00%), more than its reject_limit 20.00%" in (
        failed["message"])
    assert condition(job, "ODSToDWD")["reason"] == "TooManyRejects"
    assert job["attempt"] == 1 and job["params"]["retries"] == 3  # not retried
    events = (await api.get(f"/v1/jobs/{job['job_id']}/events")).json()["events"]
    assert [e["event"] for e in events].count("retry_stage") == 0

    url = f"/v1/jobs/{job['job_id']}/layers/dwd"
    rejects = (await api.get(f"{url}/rejects")).json()
    assert sorted(r["device_id"] for r in rejects) == ["d04", "d08", "d12"]
    problem = assert_problem(await api.get(url), 409)
    assert "layer dwd" in problem["detail"] and "Failed" in problem["detail"]
    assert (await api.get(f"/v1/jobs/{job['job_id']}/layers/ods")).status_code == 200


async def test_schema_drift_with_fail_names_added_missing_and_retyped_columns(
    api: httpx.AsyncClient,
) -> None:
    contract = {"columns": {"device_id": "TEXT", "reading": "int", "site": "string"},
                "on_drift": "fail"}
    job = await run_job(api, contract=contract)

    assert job["status"] == "Failed" and job["attempt"] == 1
    failed = condition(job, "Failed")
    assert failed["reason"] == "SchemaDrift"
    assert ("dwd: the output does not match its contract: missing site (VARCHAR); "
            "retyped reading (INTEGER → DOUBLE)") in failed["message"]
    stored = job["params"]["layers"]["dwd"]["contract"]["columns"]
    assert stored == {"device_id": "VARCHAR", "reading": "INTEGER", "site": "VARCHAR"}


async def test_schema_drift_with_warn_succeeds_with_a_condition_and_an_event(
    api: httpx.AsyncClient,
) -> None:
    job = await run_job(api, contract={"columns": {"device_id": "varchar"}, "on_drift": "warn"})

    assert job["status"] == "Succeeded"
    message = "dwd: the output does not match its contract: added reading (DOUBLE)"
    drift = condition(job, "SchemaDrift")
    assert (drift["status"], drift["reason"], drift["message"]) == ("True", "SchemaDrift",
                                                                    message)
    events = (await api.get(f"/v1/jobs/{job['job_id']}/events")).json()["events"]
    warning = next(e for e in events if e["event"] == "warning")
    assert warning["message"] == message and warning["to_status"] == "ODSToDWD"


async def test_a_contract_with_an_unknown_type_is_a_422_naming_the_field(
    api: httpx.AsyncClient,
) -> None:
    body = {"name": "bad", "params": sensor_params(contract={"columns": {"reading": "nope"}})}
    problem = assert_problem(await api.post("/v1/jobs", json=body), 422)
    assert problem["errors"][0]["field"] == "body.params.layers.dwd.contract.columns"
    assert "'reading'" in problem["errors"][0]["message"]
    body["params"] = sensor_params(reject_limit=2)
    problem = assert_problem(await api.post("/v1/jobs", json=body), 422)
    assert problem["errors"][0]["field"] == "body.params.layers.dwd.reject_limit"
