"""An unordered layer with checks or dedupe is read once from DuckDB as Arrow and split into the
layer and its rejects by pyarrow writers: the files hold DuckDB's types and every row once."""

from __future__ import annotations

import duckdb
import pyarrow.parquet as pq
import pytest

from app.domain.states import Stage
from tests.executor.engine.stages import StageRunner, csv_params, write_csv

pytestmark = pytest.mark.usefixtures("no_leftovers")

TYPED_SQL = (
    "SELECT CAST(id AS INTEGER) AS id, TRY_CAST(ts AS TIMESTAMP) AS ts, "
    "CAST(TRY_CAST(ts AS TIMESTAMP) AS DATE) AS day, TRY_CAST(price AS DECIMAL(12, 2)) AS price, "
    "CAST(TRY_CAST(price AS DECIMAL(12, 2)) AS DOUBLE) * 2 AS twice, _source_file, _row_number "
    "FROM ods"
)
LAYER = {
    "sql": TYPED_SQL,
    "dedupe": {"keys": ["id"], "order_by": "ts DESC NULLS LAST, _row_number"},
    "checks": [
        {"name": "has_ts", "expr": "ts IS NOT NULL"},
        {"name": "has_price", "expr": "price IS NOT NULL"},
    ],
}


def types_of(folder: str) -> list[tuple[str, str]]:
    con = duckdb.connect()
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{folder}/*.parquet')").fetchall()
    finally:
        con.close()
    return [(str(r[0]), str(r[1])) for r in rows]


def test_the_layer_and_its_rejects_keep_duckdbs_types(runner: StageRunner) -> None:
    rows = [[i, f"2024-01-{1 + i % 28:02d} 10:00:00", f"{i}.25"] for i in range(3000)]
    rows += [[1, "2024-02-01 00:00:00", "N/A"], [2, "not a time", "1.00"], [3, "", "2.00"]]
    write_csv(runner.landing / "in" / "f.csv", ["id", "ts", "price"], rows)
    params = csv_params(dwd=LAYER)
    runner.run(params, Stage.LANDING_TO_ODS)

    result = runner.run(params, Stage.ODS_TO_DWD, threads=2)

    layer = [
        ("id", "INTEGER"), ("ts", "TIMESTAMP"), ("day", "DATE"), ("price", "DECIMAL(12,2)"),
        ("twice", "DOUBLE"), ("_source_file", "VARCHAR"), ("_row_number", "BIGINT"),
    ]
    assert types_of(str(runner.layer_dir("dwd"))) == layer
    assert types_of(str(runner.layer_dir("dwd_rejects"))) == [*layer, ("_reject_reason", "VARCHAR")]
    for path in runner.layer_dir("dwd").glob("*.parquet"):
        column = pq.ParquetFile(path).schema.column(3)
        assert column.physical_type == "INT64"  # as DuckDB stores DECIMAL(12, 2)
    # id 1: its latest event has no price; id 2: an unparsable ts sorts last, the older event wins
    # id 3: an empty ts sorts last too
    assert (result.rows, result.rejects, result.deduped) == (2999, 1, 3)
    con = duckdb.connect()
    try:
        reasons = con.execute(
            f"SELECT id, _reject_reason FROM read_parquet('{runner.layer_dir('dwd_rejects')}/*')"
        ).fetchall()
        twice = con.execute(
            f"SELECT twice FROM read_parquet('{runner.layer_dir('dwd')}/*') WHERE id = 7"
        ).fetchall()
    finally:
        con.close()
    assert reasons == [(1, "has_price")]
    assert twice == [(14.5,)]
