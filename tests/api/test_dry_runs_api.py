"""`POST /v1/jobs?dry_run=true`: every layer on a sample, answered at once, nothing created."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import SQLModel

from app.store.db import create_engine
from tests.servers import free_port
from tests.service import running_service, service_settings

HEADER = "order_id,ts,amount,region\n"
FILES = {
    "orders/a.csv": HEADER + "o1,2024-01-01 10:00:00,10.50,North\n"
                             "o2,2024-01-01 11:00:00,-3,South\n"
                             "o1,2024-01-01 12:00:00,11.00,North\n",
    "orders/b.csv": HEADER + "o3,2024-01-02 09:00:00,7.25,south\n"
                             "o4,2024-01-02 10:00:00,,North\n",
}


def spec(**layers: Any) -> dict[str, Any]:
    return {"name": "try-me", "params": {
        "source": {"path": "orders/*.csv", "format": "csv"},
        "layers": {
            "dwd": {
                "sql": "SELECT order_id, ts, amount, lower(region) AS region, _source_file, "
                       "_row_number FROM ods",
                "dedupe": {"keys": ["order_id"], "order_by": "ts DESC"},
                "checks": [{"name": "positive", "expr": "amount > 0"}],
            },
            "dws": {"sql": "SELECT region, count(*) AS orders, sum(amount) AS revenue "
                           "FROM dwd GROUP BY region"},
            "ds": {"sql": "SELECT region, orders, revenue FROM dws ORDER BY region"},
            **layers,
        },
    }}


def write_landing(root: Path) -> None:
    for name, text in FILES.items():
        path = root / "landing" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` with a digest of its bytes."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                     if p.is_file() else "dir")
        for p in sorted(folder.rglob("*"))
    }


async def row_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return {
                table.name: int((await conn.execute(
                    select(func.count()).select_from(table))).scalar_one())
                for table in SQLModel.metadata.sorted_tables
            }
    finally:
        await engine.dispose()


def scratch_folders() -> list[str]:
    return sorted(p.name for p in Path(tempfile.gettempdir()).glob("strata-dry-run-*"))


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> Any:
    write_landing(tmp_path)
    async with running_service(service_settings(database_url, tmp_path)) as client:
        yield client


async def test_a_dry_run_answers_each_layer_and_creates_nothing(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    assert (await api.post("/v1/jobs", json={**spec(), "suspend": True})).status_code == 201
    before = (await row_counts(database_url), tree(tmp_path / "landing"),
              tree(tmp_path / "warehouse"), scratch_folders())

    response = await api.post("/v1/jobs", params={"dry_run": "true"}, json=spec())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is True and body["sample_rows"] == 1000
    assert list(body["layers"]) == ["ods", "dwd", "dws", "ds"]
    ods = body["layers"]["ods"]
    assert [c["name"] for c in ods["columns"]] == [
        "order_id", "ts", "amount", "region", "_source_file", "_ingested_at", "_row_number"]
    assert {"name": "_row_number", "type": "BIGINT"} in ods["columns"]
    assert (ods["rows"], ods["rejects"], ods["deduped"]) == (5, 0, 0)
    assert [(r["_source_file"], r["_row_number"]) for r in ods["sample"]] == [
        ("orders/a.csv", 1), ("orders/a.csv", 2), ("orders/a.csv", 3),
        ("orders/b.csv", 1), ("orders/b.csv", 2)]
    dwd = body["layers"]["dwd"]
    # o1 twice → one deduped (the later ts wins); o2 (-3) and o4 (no amount) fail the check
    assert (dwd["rows"], dwd["rejects"], dwd["deduped"]) == (2, 2, 1)
    assert sorted((r["order_id"], r["amount"]) for r in dwd["sample"]) == [
        ("o1", 11.0), ("o3", 7.25)]
    ds = body["layers"]["ds"]
    assert [c["name"] for c in ds["columns"]] == ["region", "orders", "revenue"]
    assert [(r["region"], r["orders"]) for r in ds["sample"]] == [("north", 1), ("south", 1)]

    after = (await row_counts(database_url), tree(tmp_path / "landing"),
             tree(tmp_path / "warehouse"), scratch_folders())
    assert after == before
    assert before[0]["jobs"] == 1 and before[0]["job_events"] >= 1


async def test_sample_rows_cuts_the_source_in_file_then_line_order(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/jobs", params={"dry_run": "true", "sample_rows": 4},
                              json=spec())
    assert response.status_code == 200, response.text
    ods = response.json()["layers"]["ods"]
    assert ods["rows"] == 4
    assert [(r["_source_file"], r["_row_number"]) for r in ods["sample"]] == [
        ("orders/a.csv", 1), ("orders/a.csv", 2), ("orders/a.csv", 3), ("orders/b.csv", 1)]


@pytest.mark.parametrize("sample_rows", [0, 10_001, -1])
async def test_sample_rows_out_of_range_is_422(api: httpx.AsyncClient, sample_rows: int) -> None:
    response = await api.post("/v1/jobs", params={"dry_run": "true", "sample_rows": sample_rows},
                              json=spec())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.sample_rows"


@pytest.mark.parametrize(("layer", "sql", "refused"), [
    ("dwd", "SELECT * FROM read_csv('/etc/passwd')", "/etc/passwd"),
    ("dws", "COPY (SELECT * FROM dwd) TO 'out.csv'", "COPY"),
    ("ods", "SELECT * FROM read_parquet('../warehouse/x/ds/part-00000.parquet')", "read_parquet"),
])
async def test_a_sandbox_refusal_is_422_naming_the_layer(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path, layer: str, sql: str, refused: str,
) -> None:
    before = (await row_counts(database_url), tree(tmp_path / "warehouse"), scratch_folders())
    response = await api.post("/v1/jobs", params={"dry_run": "true"},
                              json=spec(**{layer: {"sql": sql}}))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert f"layer {layer}" in problem["detail"] and refused in problem["detail"]
    assert problem["errors"][0]["field"] == f"params.layers.{layer}.sql"
    assert (await row_counts(database_url), tree(tmp_path / "warehouse"),
            scratch_folders()) == before


async def test_an_sql_error_is_422_naming_the_layer(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/jobs", params={"dry_run": "true"},
                              json=spec(dws={"sql": "SELECT no_such_column FROM dwd"}))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert "layer dws" in problem["detail"] and "no_such_column" in problem["detail"]
    assert problem["errors"] == [{"field": "params.layers.dws.sql",
                                  "message": problem["errors"][0]["message"]}]


async def test_a_source_that_matches_nothing_is_422_naming_the_path(
    api: httpx.AsyncClient,
) -> None:
    body = spec()
    body["params"]["source"]["path"] = "nothing/*.csv"
    response = await api.post("/v1/jobs", params={"dry_run": "true"}, json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "params.source.path"


async def test_an_invalid_spec_is_422_as_for_a_create(api: httpx.AsyncClient) -> None:
    body = spec()
    body["params"]["source"]["path"] = "/etc/*.csv"
    response = await api.post("/v1/jobs", params={"dry_run": "true"}, json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("body.params.source")


async def test_dry_runs_share_the_create_rate(database_url: str, tmp_path: Path) -> None:
    write_landing(tmp_path)
    settings = service_settings(database_url, tmp_path, creates_per_minute=3)
    async with running_service(settings) as api:
        dry = {"dry_run": "true", "sample_rows": 2}
        assert (await api.post("/v1/jobs", params=dry, json=spec())).status_code == 200
        assert (await api.post("/v1/jobs", params=dry, json=spec())).status_code == 200
        assert (await api.post("/v1/jobs", json={**spec(), "suspend": True})).status_code == 201
        refused = await api.post("/v1/jobs", params=dry, json=spec())
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert (await api.post("/v1/jobs", json=spec())).status_code == 429


async def test_a_dry_run_needs_no_executor(database_url: str, tmp_path: Path) -> None:
    """With the executor elsewhere (here: nowhere), the API runs the configured engine itself."""
    write_landing(tmp_path)
    settings = service_settings(database_url, tmp_path,
                                executor_url=f"http://127.0.0.1:{free_port()}/executor")
    async with running_service(settings) as api:
        response = await api.post("/v1/jobs", params={"dry_run": "true"}, json=spec())
        assert response.status_code == 200, response.text
        assert response.json()["layers"]["ds"]["rows"] == 2
