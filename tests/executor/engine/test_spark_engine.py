"""The Spark engine runs the same jobs as the DuckDB engine, with the same results.

One local Spark (local[2]) serves the whole module; the reference orders job runs once on a small
dirty dataset on both engines and every layer is compared. Skipped without pyspark or Java.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark", reason="the Spark engine needs pyspark (the 'spark' extra)")
pytest.importorskip("sqlglot", reason="the Spark engine needs sqlglot (the 'spark' extra)")
if shutil.which("java") is None:
    pytest.skip("the Spark engine needs a Java runtime (java on PATH)", allow_module_level=True)

import pyarrow as pa
import pyarrow.parquet as pq

from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.engine.base import (
    CancelToken,
    LayerResult,
    Progress,
    SandboxViolation,
    StageCancelled,
    StageFailed,
    StageRequest,
)
from app.executor.engine.spark_engine import SparkEngine
from tests.executor.engine.stages import reader_of, watch_publishing
from tests.orders_data import Dirt, file_slices, generate, write_csv

pytestmark = [
    pytest.mark.slow,
    # the module's first test also starts the JVM and runs the job on both engines
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pyspark.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:py4j.*"),
]

ROOT = Path(__file__).resolve().parents[3]
JOB = json.loads((ROOT / "examples" / "orders_job.json").read_text(encoding="utf-8"))
FILES = 3
LINEAGE = ["_source_file", "_ingested_at", "_row_number"]
KEYS = {
    "ods": ("_source_file", "_row_number"),
    "dwd": ("order_id",),
    "dwd_rejects": ("order_id",),
    "dws": ("event_date", "region", "status"),
    "ds": ("event_date", "region"),
}


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkEngine]:
    engine = SparkEngine(
        "local[2]",
        app_name="strata-tests",
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.local.dir": str(tmp_path_factory.mktemp("spark-local")),
            # small splits: every landing file is read as several splits, so the ODS row
            # numbers are checked across split boundaries
            "spark.sql.files.maxPartitionBytes": "40000",
            "spark.sql.files.openCostInBytes": "4096",
        },
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A landing directory with orders/orders_000N.csv: dirty order events, every kind of dirt."""
    landing = tmp_path_factory.mktemp("landing")
    rows = generate(3000, seed=7, dirt=Dirt().scaled(10))
    write_csv(rows, landing / "orders", files=FILES)
    return landing, rows


@pytest.fixture(scope="module")
def params() -> JobParams:
    return JobParams.model_validate(JOB["params"])


@pytest.fixture(scope="module")
def spark_run(
    spark_engine: SparkEngine, orders: tuple[Path, list[dict[str, Any]]], params: JobParams,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, LayerResult], dict[str, list[Progress]]]:
    """The reference job's four stages on Spark: (job folder, results, progress reports)."""
    warehouse = tmp_path_factory.mktemp("warehouse-spark")
    results, reports = run_job(spark_engine, orders[0], warehouse, params)
    return warehouse / "job-1", results, reports


@pytest.fixture(scope="module")
def duckdb_run(
    orders: tuple[Path, list[dict[str, Any]]], params: JobParams,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, LayerResult]]:
    """The same job on the DuckDB engine (the reference for equal results)."""
    try:
        from app.executor.engine.duckdb_engine import DuckDBEngine
    except ImportError:  # pragma: no cover - the DuckDB engine ships with Strata
        pytest.skip("the DuckDB engine is not importable; nothing to compare with")
    warehouse = tmp_path_factory.mktemp("warehouse-duckdb")
    results, _ = run_job(DuckDBEngine(), orders[0], warehouse, params)
    return warehouse / "job-1", results


def run_job(
    engine: Any, landing: Path, warehouse: Path, params: JobParams, job_id: str = "job-1"
) -> tuple[dict[str, LayerResult], dict[str, list[Progress]]]:
    results: dict[str, LayerResult] = {}
    reports: dict[str, list[Progress]] = {}
    for stage in Stage:
        reports[stage.layer] = []
        request = StageRequest(job_id=job_id, stage=stage, params=params, landing_dir=landing,
                               warehouse_dir=warehouse)
        results[stage.layer] = engine.run_stage(request, reports[stage.layer].append,
                                                CancelToken())
    return results, reports


def request_for(
    landing: Path, warehouse: Path, stage: Stage, layers: dict[str, Any], job_id: str = "job-1"
) -> StageRequest:
    params = JobParams.model_validate({**JOB["params"], "layers": layers})
    return StageRequest(job_id=job_id, stage=stage, params=params, landing_dir=landing,
                        warehouse_dir=warehouse)


def read_layer(folder: Path) -> pa.Table:
    files = sorted(folder.glob("*.parquet"))
    assert files, f"no Parquet files in {folder}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def comparable(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return value


def assert_same_rows(left: list[dict[str, Any]], right: list[dict[str, Any]], what: str) -> None:
    assert len(left) == len(right), what
    for index, (a, b) in enumerate(zip(left, right, strict=True)):
        assert a.keys() == b.keys(), what
        for column in a:
            x, y = comparable(a[column]), comparable(b[column])
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9), (what, index, column, x, y)
            else:
                assert x == y, (what, index, column, x, y)


def by_key(table: pa.Table, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = [{k: v for k, v in row.items() if k != "_ingested_at"} for row in table.to_pylist()]
    return sorted(rows, key=lambda r: tuple((r[k] is None, r[k]) for k in keys))


# -- the reference job ------------------------------------------------------------------------


def test_the_reference_job_gives_the_same_layers_on_spark_as_on_duckdb(
    spark_run: tuple[Path, dict[str, LayerResult], dict[str, list[Progress]]],
    duckdb_run: tuple[Path, dict[str, LayerResult]],
) -> None:
    spark_dir, spark_results, _ = spark_run
    duck_dir, duck_results = duckdb_run
    for layer in ("ods", "dwd", "dws", "ds"):
        s, d = spark_results[layer], duck_results[layer]
        assert (s.rows, s.rejects, s.deduped) == (d.rows, d.rejects, d.deduped), layer
        assert s.path == str(spark_dir / layer)
        assert s.rejects_path == (str(spark_dir / f"{layer}_rejects") if d.rejects_path else None)
        assert s.extra["rows_after_sql"] == d.extra["rows_after_sql"], layer
    assert spark_results["dwd"].rejects > 0 and spark_results["dwd"].deduped > 0
    # DS: the same rows in the same (ORDER BY) order, in one file
    assert len(list((spark_dir / "ds").glob("*.parquet"))) == 1
    spark_ds, duck_ds = read_layer(spark_dir / "ds"), read_layer(duck_dir / "ds")
    assert spark_ds.schema.names == duck_ds.schema.names
    assert_same_rows(spark_ds.to_pylist(), duck_ds.to_pylist(), "ds")
    # every other layer: the same rows by key, the same column types
    for layer, keys in KEYS.items():
        spark_table, duck_table = read_layer(spark_dir / layer), read_layer(duck_dir / layer)
        assert spark_table.schema.names == duck_table.schema.names, layer
        for name in spark_table.schema.names:
            assert_same_type(spark_table.schema.field(name).type,
                             duck_table.schema.field(name).type, f"{layer}.{name}")
        assert_same_rows(by_key(spark_table, keys), by_key(duck_table, keys), layer)


def assert_same_type(spark_type: pa.DataType, duck_type: pa.DataType, what: str) -> None:
    if pa.types.is_timestamp(duck_type):
        assert pa.types.is_timestamp(spark_type) and spark_type.tz is None, what
    else:
        assert spark_type == duck_type, what


def test_ods_adds_lineage_in_each_files_line_order(
    spark_run: tuple[Path, dict[str, LayerResult], dict[str, list[Progress]]],
    orders: tuple[Path, list[dict[str, Any]]],
) -> None:
    job_dir, results, _ = spark_run
    ods = read_layer(job_dir / "ods").to_pylist()
    assert results["ods"].rows == len(orders[1])
    assert {row["_ingested_at"] for row in ods} == {ods[0]["_ingested_at"]}
    for index, expected in enumerate(file_slices(orders[1], FILES)):
        name = f"orders/orders_{index + 1:04d}.csv"
        got = sorted((r for r in ods if r["_source_file"] == name), key=lambda r: r["_row_number"])
        assert [r["_row_number"] for r in got] == list(range(1, len(expected) + 1))
        assert [r["order_id"] for r in got] == [e["order_id"] for e in expected]
        assert [r["event_ts"] for r in got] == [e["event_ts"] for e in expected]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_ods_lineage_for_jsonl_and_parquet_sources(
    spark_engine: SparkEngine, tmp_path: Path, fmt: str
) -> None:
    landing = tmp_path / "landing"
    (landing / "in").mkdir(parents=True)
    files = {"in/a": [{"zeta": "a1", "alpha": 1}, {"zeta": "a2", "alpha": 2}],
             "in/b": [{"zeta": f"b{i}", "alpha": i} for i in range(1, 4)]}
    for name, records in files.items():
        if fmt == "jsonl":
            lines = "".join(json.dumps(r) + "\n" for r in records)
            (landing / f"{name}.jsonl").write_text(lines, encoding="utf-8")
        else:
            pq.write_table(pa.Table.from_pylist(records), landing / f"{name}.parquet")
    params = JobParams.model_validate({"source": {"path": f"in/*.{fmt}", "format": fmt}})
    request = StageRequest(job_id="job-f", stage=Stage.LANDING_TO_ODS, params=params,
                           landing_dir=landing, warehouse_dir=tmp_path / "warehouse")
    result = spark_engine.run_stage(request, lambda p: None, CancelToken())
    table = read_layer(tmp_path / "warehouse" / "job-f" / "ods")
    assert result.rows == 5 and result.rejects_path is None
    # the first record's key order, as DuckDB reads it (Spark would sort JSON fields by name)
    assert table.schema.names == ["zeta", "alpha", *LINEAGE]
    got = sorted((r["_source_file"], r["_row_number"], r["zeta"]) for r in table.to_pylist())
    assert got == [(f"{name}.{fmt}", i + 1, record["zeta"])
                   for name, records in files.items() for i, record in enumerate(records)]


def test_progress_rises_to_100_percent(
    spark_run: tuple[Path, dict[str, LayerResult], dict[str, list[Progress]]],
) -> None:
    _, results, reports = spark_run
    for layer, seen in reports.items():
        percents = [p.percent for p in seen]
        assert percents == sorted(percents) and percents[-1] == 100.0, layer
        assert seen[-1].processed == seen[-1].total > 0, layer
    assert reports["dwd"][-1].total == results["ods"].rows


def test_a_rerun_replaces_the_layer(
    spark_engine: SparkEngine, spark_run: tuple[Path, dict[str, LayerResult], Any],
    orders: tuple[Path, list[dict[str, Any]]],
) -> None:
    job_dir, results, _ = spark_run
    request = StageRequest(job_id="job-1", stage=Stage.DWS_TO_DS,
                           params=JobParams.model_validate(JOB["params"]),
                           landing_dir=orders[0], warehouse_dir=job_dir.parent)
    before = read_layer(job_dir / "ds")
    again = spark_engine.run_stage(request, lambda p: None, CancelToken())
    assert again.rows == results["ds"].rows
    assert read_layer(job_dir / "ds").equals(before)
    assert not list(job_dir.glob(".tmp-*"))


def test_a_rerun_never_leaves_a_moment_without_the_layer(
    spark_engine: SparkEngine, spark_run: tuple[Path, dict[str, LayerResult], Any],
    orders: tuple[Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The layer folder is swapped, not removed then renamed: a reader always finds it."""
    job_dir, results, _ = spark_run
    request = StageRequest(job_id="job-1", stage=Stage.DWD_TO_DWS,
                           params=JobParams.model_validate(JOB["params"]),
                           landing_dir=orders[0], warehouse_dir=job_dir.parent)
    absent = watch_publishing(monkeypatch, job_dir / "dws")
    with reader_of(job_dir / "dws") as misses:
        again = spark_engine.run_stage(request, lambda p: None, CancelToken())
    assert absent == [] and misses == []
    assert again.rows == results["dws"].rows


# -- the sandbox and the transpiler -------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "refused"),
    [
        ({"dwd": {"sql": "COPY ods TO '/tmp/out.csv'"}}, "only one SELECT"),
        ({"dwd": {"sql": "SELECT * FROM ods; SELECT 1"}}, "only one SELECT"),
        ({"dwd": {"sql": "ATTACH '/tmp/other.db'"}}, "only one SELECT"),
        ({"dwd": {"sql": "SET threads = 1"}}, "only one SELECT"),
        ({"dwd": {"sql": "SELECT * FROM '/etc/passwd'"}}, "file '/etc/passwd'"),
        ({"dwd": {"sql": "SELECT * FROM read_csv('/etc/passwd')"}}, "refused"),
        ({"dwd": {"sql": "SELECT * FROM dws"}}, "table 'dws'"),
        ({"dwd": {"sql": "SELECT * FROM ods WHERE order_id IN (SELECT x FROM secrets)"}},
         "table 'secrets'"),
        ({"dwd": {"sql": "SELECT reflect('java.lang.System', 'exit', 0) FROM ods"}},
         "reflect"),
        ({"dwd": {"checks": [{"name": "c", "expr": "order_id IN (SELECT x FROM other)"}]}},
         "table 'other'"),
        ({"dwd": {"dedupe": {"keys": ["order_id"], "order_by": "order_id; DROP TABLE x"}}},
         "statements are refused"),
    ],
)
def test_user_sql_that_leaves_its_input_layer_is_refused(
    spark_engine: SparkEngine, tmp_path: Path, layers: dict[str, Any], refused: str
) -> None:
    request = request_for(tmp_path, tmp_path, Stage.ODS_TO_DWD, layers)
    with pytest.raises(SandboxViolation, match="layer dwd") as caught:
        spark_engine.run_stage(request, lambda p: None, CancelToken())
    assert refused in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT try(CAST(quantity AS INTEGER)) AS q FROM ods", "cannot be transpiled"),
        ("SELECT * FROM ods ASOF JOIN ods o2 ON ods.event_ts >= o2.event_ts",
         "ASOF JOIN is DuckDB-only"),
        ("SELECT COLUMNS('.*_id') FROM ods", "COLUMNS(...) is DuckDB-only"),
    ],
)
def test_sql_that_cannot_be_transpiled_fails_naming_the_layer(
    spark_engine: SparkEngine, tmp_path: Path, sql: str, message: str
) -> None:
    request = request_for(tmp_path, tmp_path, Stage.ODS_TO_DWD, {"dwd": {"sql": sql}})
    with pytest.raises(StageFailed, match=r"^layer dwd sql: ") as caught:
        spark_engine.run_stage(request, lambda p: None, CancelToken())
    assert not isinstance(caught.value, SandboxViolation)
    assert message in str(caught.value)


def test_a_spark_error_fails_the_stage_with_the_users_names(
    spark_engine: SparkEngine, spark_run: tuple[Path, Any, Any], tmp_path: Path,
) -> None:
    job_dir, _, _ = spark_run
    shutil.copytree(job_dir / "ods", tmp_path / "job-x" / "ods")
    request = request_for(tmp_path, tmp_path, Stage.ODS_TO_DWD,
                          {"dwd": {"sql": "SELECT no_such_column FROM ods"}}, job_id="job-x")
    with pytest.raises(StageFailed, match=r"^layer dwd sql: .*no_such_column") as caught:
        spark_engine.run_stage(request, lambda p: None, CancelToken())
    assert "strata_" not in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "job-x").iterdir()) == ["ods"]


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_stops_a_running_stage_and_leaves_no_output(
    spark_engine: SparkEngine, spark_run: tuple[Path, Any, Any], tmp_path: Path,
) -> None:
    job_dir, _, _ = spark_run
    shutil.copytree(job_dir / "ods", tmp_path / "job-c" / "ods")
    endless = (  # 4.5e7 SHA-512 digests: minutes on two cores, in small memory
        "SELECT a.order_id, max(sha2(concat(a.order_id, b.order_id, c.customer_id), 512)) AS h "
        "FROM ods a CROSS JOIN ods b CROSS JOIN (SELECT * FROM ods LIMIT 5) c GROUP BY a.order_id"
    )
    request = request_for(tmp_path, tmp_path, Stage.ODS_TO_DWD, {"dwd": {"sql": endless}},
                          job_id="job-c")
    token = CancelToken()
    started = threading.Event()
    outcome: list[BaseException | LayerResult] = []

    def report(progress: Progress) -> None:
        started.set()

    def run() -> None:
        try:
            outcome.append(spark_engine.run_stage(request, report, token))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(60), "the stage never reported progress"
    cancelled_at = time.monotonic()
    token.cancel()
    worker.join(30)
    assert not worker.is_alive()
    assert time.monotonic() - cancelled_at < 10
    assert len(outcome) == 1 and isinstance(outcome[0], StageCancelled)
    assert sorted(p.name for p in (tmp_path / "job-c").iterdir()) == ["ods"]
    # the engine is still usable
    request = request_for(tmp_path, tmp_path, Stage.ODS_TO_DWD,
                          {"dwd": {"sql": "SELECT order_id FROM ods"}}, job_id="job-c")
    assert spark_engine.run_stage(request, lambda p: None, CancelToken()).rows > 0


def test_a_stage_cancelled_before_it_starts_does_nothing(
    spark_engine: SparkEngine, tmp_path: Path
) -> None:
    token = CancelToken()
    token.cancel()
    request = request_for(tmp_path, tmp_path, Stage.LANDING_TO_ODS, {})
    with pytest.raises(StageCancelled):
        spark_engine.run_stage(request, lambda p: None, token)
    assert list(tmp_path.iterdir()) == []


async def test_a_dry_run_on_spark_samples_and_counts_as_on_duckdb(
    spark_engine: SparkEngine, orders: tuple[Path, list[dict[str, Any]]], params: JobParams,
    tmp_path: Path,
) -> None:
    from app.executor.engine.duckdb_engine import DuckDBEngine
    from app.services.dry_runs import DryRunService

    landing = orders[0]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    on_spark = await DryRunService(lambda: spark_engine, landing, scratch_dir=scratch).dry_run(
        "local", params, sample_rows=1500)
    on_duckdb = await DryRunService(lambda: DuckDBEngine(), landing).dry_run(
        "local", params, sample_rows=1500)
    assert on_spark.layers["ods"].rows == 1500
    for layer in ("ods", "dwd", "dws", "ds"):
        spark, duck = on_spark.layers[layer], on_duckdb.layers[layer]
        assert (spark.rows, spark.rejects, spark.deduped) == (duck.rows, duck.rejects,
                                                             duck.deduped), layer
        assert [c["name"] for c in spark.columns] == [c["name"] for c in duck.columns], layer
    def keys(sample: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r["event_date"], r["region"], r["order_count"]) for r in sample]

    assert keys(on_spark.layers["ds"].sample) == keys(on_duckdb.layers["ds"].sample)
    assert sorted(p.name for p in scratch.iterdir()) == []
