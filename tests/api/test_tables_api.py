"""Pipeline tables through HTTP: each Succeeded run's rows land in its table once; rows, paging,
CSV, time travel and history are served; the Completed step may run again without adding rows.
The real service, executor, DuckDB and Delta Lake."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import httpx
import yaml

from app.api.deps import services_of
from app.store.models import Job
from app.tables.runs import commit_tables
from tests.api.test_incremental_api import csv as readings
from tests.api.test_incremental_api import finished
from tests.api.test_jobs_api import assert_problem
from tests.orders_data import EXAMPLES

PIPELINE = {"params": {
    "source": {"path": "readings/*.csv", "options": {"header": True}, "mode": "new_files"},
    "layers": {"ds": {"sql": "SELECT day, device, value FROM dws ORDER BY device",
                      "table": {"mode": "merge", "keys": ["day", "device"]}},
               "dwd": {"table": {"mode": "append"}}}}}


async def run_day(api: httpx.AsyncClient, day: str, n: int) -> dict[str, Any]:
    await api.put(f"/v1/landing/readings/{day}.csv", content=readings(day, n))
    created = await api.post("/v1/pipelines/readings/runs")
    assert created.status_code == 201, created.text
    done = await finished(api, created.json()["job_id"])
    assert done["status"] == "Succeeded", done["conditions"]
    return done


async def rows(api: httpx.AsyncClient, layer: str = "ds", **query: Any) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/pipelines/readings/tables/{layer}", params=query)
    assert response.status_code == 200, response.text
    return list(response.json())


async def test_runs_grow_the_tables_which_serve_rows_versions_and_history(
    api: httpx.AsyncClient,
) -> None:
    assert (await api.put("/v1/pipelines/readings", json=PIPELINE)).status_code == 201
    assert_problem(await api.get("/v1/pipelines/readings/tables/ds"), 404)  # no run yet
    first = await run_day(api, "2026-01-01", 3)
    assert first["results"]["tables"] == {"dwd": {"version": 0, "operation": "APPEND"},
                                          "ds": {"version": 0, "operation": "APPEND"}}
    second = await run_day(api, "2026-01-02", 4)
    assert second["results"]["tables"]["ds"] == {"version": 1, "operation": "MERGE"}

    table = await rows(api)
    assert len(table) == 7 and list(table[0]) == ["day", "device", "value"]
    assert sorted((r["day"], r["device"]) for r in table) == sorted(
        [("2026-01-01", f"d{i}") for i in range(3)] + [("2026-01-02", f"d{i}") for i in range(4)])
    assert len(await rows(api, "dwd")) == 7
    assert [r["day"] for r in await rows(api, version=0)] == ["2026-01-01"] * 3
    paged = (await rows(api, limit=3, offset=0) + await rows(api, limit=3, offset=3)
             + await rows(api, limit=3, offset=6))
    assert paged == table
    text = (await api.get("/v1/pipelines/readings/tables/ds", params={"format": "csv"})).text
    assert len(list(csv.DictReader(io.StringIO(text)))) == 7

    history = (await api.get("/v1/pipelines/readings/tables/ds/history")).json()["versions"]
    assert [(v["version"], v["job_id"], v["operation"]) for v in history] == [
        (1, second["job_id"], "MERGE"), (0, first["job_id"], "APPEND")]
    assert [v["rows_added"] for v in history] == [4, 3]
    # a run ends when its rows are in: ended_at is taken after the table's commit
    assert datetime.fromisoformat(second["ended_at"]) >= datetime.fromisoformat(
        history[0]["committed_at"])

    # the Completed step of the second run again (a crash after its commit): nothing is added
    sessions = services_of(api.app).jobs.sessions  # type: ignore[attr-defined]
    async with sessions() as session:
        job = await session.get(Job, second["job_id"])
    assert job is not None
    warehouse = services_of(api.app).warehouse_dir  # type: ignore[attr-defined]
    assert await commit_tables(warehouse, job) == second["results"]["tables"]
    assert len((await api.get("/v1/pipelines/readings/tables/ds/history")).json()[
        "versions"]) == 2
    assert len(await rows(api, "dwd")) == 7


async def test_bad_layers_versions_and_pipelines_are_problems(api: httpx.AsyncClient) -> None:
    assert (await api.put("/v1/pipelines/readings", json=PIPELINE)).status_code == 201
    bad = assert_problem(await api.get("/v1/pipelines/readings/tables/gold"), 422)
    assert "layer" in bad["errors"][0]["field"]
    assert_problem(await api.get("/v1/pipelines/nope/tables/ds"), 404)
    assert_problem(await api.get("/v1/pipelines/readings/tables/ds/history"), 404)
    await run_day(api, "2026-01-01", 2)
    assert_problem(await api.get("/v1/pipelines/readings/tables/ods"), 404)  # no table declared
    assert_problem(await api.get("/v1/pipelines/readings/tables/ds",
                                 params={"version": 5}), 404)
    assert_problem(await api.get("/v1/pipelines/readings/tables/ds",
                                 params={"version": -1}), 422)
    plain = await api.post("/v1/jobs", json={"name": "x", "params": {
        "source": {"path": "readings/*.csv"}, "layers": {"ds": {"table": {"mode": "append"}}}}})
    assert assert_problem(plain, 422)["errors"][0]["field"] == "params.layers.ds.table"
    refused = await api.put("/v1/pipelines/other", json={"params": {
        "source": {"path": "x/*.csv"}, "layers": {"ds": {"table": {"mode": "merge"}}}}})
    assert "keys" in assert_problem(refused, 422)["detail"]


async def test_the_incremental_example_merges_each_nights_new_orders(
    api: httpx.AsyncClient,
) -> None:
    spec = yaml.safe_load((EXAMPLES / "orders_incremental.yaml").read_text())
    name = spec.pop("name")
    assert (await api.put(f"/v1/pipelines/{name}", json=spec)).status_code == 201
    dwd_rows = []
    for day, file in (("2026-01-05", "orders_0001.csv"), ("2026-01-06", "orders_0002.csv")):
        body = (EXAMPLES / "orders" / file).read_bytes()
        await api.put(f"/v1/landing/orders/{day}/{file}", content=body)
        done = await finished(api, (await api.post(f"/v1/pipelines/{name}/runs")).json()["job_id"])
        assert done["status"] == "Succeeded", done["conditions"]
        assert [i["path"] for i in done["results"]["inputs"]] == [f"orders/{day}/{file}"]
        dwd_rows.append(done["results"]["layers"]["dwd"]["rows"])
    assert_problem(await api.post(f"/v1/pipelines/{name}/runs"), 409)
    table = (await api.get(f"/v1/pipelines/{name}/tables/dwd",
                           params={"limit": 1_000_000})).json()
    ids = [row["order_id"] for row in table]
    assert len(ids) == len(set(ids))  # merged by order_id
    assert sum(dwd_rows) >= len(ids) >= max(dwd_rows)
