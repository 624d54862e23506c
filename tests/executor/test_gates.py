"""Data-quality gates judge what an engine wrote: the same verdict from DuckDB and from Spark.

Each test runs ODS and DWD of a small sensor job on a real engine over real CSV files, then asks
`gates.evaluate` about the DWD folder. The Spark cases are skipped without pyspark or Java.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.domain.params import JobParams, Layer
from app.domain.sqltypes import canonical_type
from app.domain.states import Stage
from app.executor.engine.base import CancelToken, Engine, LayerResult, StageRequest
from app.executor.engine.duckdb_engine import DuckDBEngine
from app.executor.gates import SCHEMA_DRIFT, TOO_MANY_REJECTS, Verdict, evaluate

DWD_SQL = ("SELECT device_id, TRY_CAST(reading AS DOUBLE) AS reading, "
           "TRY_CAST(n AS INTEGER) AS n FROM ods")
ROWS = [("d1", "1.5", "1"), ("d2", "oops", "2"), ("d3", "2.5", "3"), ("d4", "", "4"),
        ("d5", "3.5", "5"), ("d6", "4.5", "6"), ("d7", "5.5", "7"), ("d8", "6.5", "8")]
"""Eight readings, two of which (d2, d4) are no number: 25 % rejects under the check."""


SPARK = pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.timeout(600)])


@pytest.fixture(scope="module", params=["duckdb", SPARK])
def engine(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if request.param == "duckdb":
        yield DuckDBEngine()
        return
    pytest.importorskip("pyspark", reason="the Spark engine needs pyspark (the 'spark' extra)")
    pytest.importorskip("sqlglot", reason="the Spark engine needs sqlglot (the 'spark' extra)")
    if shutil.which("java") is None:
        pytest.skip("the Spark engine needs a Java runtime")
    from app.executor.engine.spark_engine import SparkEngine

    spark = SparkEngine("local[1]", app_name="strata-gate-tests", conf={
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2",
        "spark.local.dir": str(tmp_path_factory.mktemp("spark-local"))})
    yield spark
    spark.close()


def params(**dwd: Any) -> JobParams:
    return JobParams.model_validate({
        "source": {"path": "in/*.csv", "format": "csv",
                   "options": {"header": True, "all_varchar": True}},
        "layers": {"dwd": {"sql": DWD_SQL,
                           "checks": [{"name": "no_reading", "expr": "reading IS NOT NULL"}],
                           **dwd}},
        "batch_size": 1000,
    })


def run_dwd(engine: Engine, tmp_path: Path, job: JobParams) -> tuple[LayerResult, Verdict, Path]:
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    (landing / "in").mkdir(parents=True)
    warehouse.mkdir()
    lines = ["device_id,reading,n", *(",".join(row) for row in ROWS)]
    (landing / "in" / "readings.csv").write_text("\n".join(lines) + "\n")
    result = None
    for stage in (Stage.LANDING_TO_ODS, Stage.ODS_TO_DWD):
        request = StageRequest(job_id="job-1", stage=stage, params=job,
                               landing_dir=landing.resolve(), warehouse_dir=warehouse.resolve())
        result = engine.run_stage(request, lambda _p: None, CancelToken())
    assert result is not None
    output = warehouse.resolve() / "job-1" / "dwd"
    return result, evaluate(job.layers.dwd, result, output), output


def test_no_gates_no_verdict(engine: Engine, tmp_path: Path) -> None:
    result, verdict, _ = run_dwd(engine, tmp_path, params())
    assert (result.rows, result.rejects) == (6, 2)
    assert verdict == Verdict() and not verdict.failed and verdict.result_fields() == {}


def test_a_share_of_rejects_above_the_limit_fails_with_too_many_rejects(
    engine: Engine, tmp_path: Path
) -> None:
    _, verdict, _ = run_dwd(engine, tmp_path, params(reject_limit=0.2))
    assert verdict.failed and verdict.reason == TOO_MANY_REJECTS
    assert verdict.message == ("dwd: 2 of 8 rows rejected (25.00%), more than its "
                               "reject_limit 20.00%")
    assert verdict.result_fields() == {"reason": "TooManyRejects", "retryable": False}


def test_a_share_at_the_limit_passes(engine: Engine, tmp_path: Path) -> None:
    _, verdict, _ = run_dwd(engine, tmp_path, params(reject_limit=0.25))
    assert not verdict.failed


def test_a_matching_contract_passes_whatever_the_aliases_case_and_order(
    engine: Engine, tmp_path: Path
) -> None:
    contract = {"columns": {"N": "int4", "reading": "float8", "device_id": "text"}}
    _, verdict, _ = run_dwd(engine, tmp_path, params(contract=contract))
    assert verdict == Verdict()


def test_drift_names_the_added_missing_and_retyped_columns(
    engine: Engine, tmp_path: Path
) -> None:
    contract = {"columns": {"device_id": "string", "reading": "INT", "battery": "bool"},
                "on_drift": "fail"}
    _, verdict, _ = run_dwd(engine, tmp_path, params(contract=contract))
    assert verdict.failed and verdict.reason == SCHEMA_DRIFT
    assert verdict.message == (
        "dwd: the output does not match its contract: added n (INTEGER); "
        "missing battery (BOOLEAN); retyped reading (INTEGER → DOUBLE)")


def test_drift_with_warn_is_a_warning_not_a_failure(engine: Engine, tmp_path: Path) -> None:
    contract = {"columns": {"device_id": "VARCHAR", "reading": "DOUBLE"}, "on_drift": "warn"}
    _, verdict, _ = run_dwd(engine, tmp_path, params(contract=contract))
    assert not verdict.failed
    assert verdict.result_fields() == {"warnings": [{
        "reason": "SchemaDrift",
        "message": "dwd: the output does not match its contract: added n (INTEGER)"}]}


def test_both_gates_failing_report_both_and_the_first_reason(
    engine: Engine, tmp_path: Path
) -> None:
    contract = {"columns": {"device_id": "VARCHAR"}}
    _, verdict, _ = run_dwd(engine, tmp_path, params(reject_limit=0.0, contract=contract))
    assert [f.reason for f in verdict.failures] == [TOO_MANY_REJECTS, SCHEMA_DRIFT]
    assert "2 of 8 rows rejected" in verdict.message
    assert "added reading (DOUBLE), n (INTEGER)" in verdict.message


@pytest.mark.parametrize(("written", "canonical"), [
    ("int", "INTEGER"), ("INT4", "INTEGER"), ("text", "VARCHAR"), ("String", "VARCHAR"),
    ("float8", "DOUBLE"), ("bool", "BOOLEAN"), ("timestamptz", "TIMESTAMP WITH TIME ZONE"),
    ("decimal(12, 2)", "DECIMAL(12,2)"), ("int[]", "INTEGER[]"), ("  bigint ", "BIGINT"),
])
def test_type_aliases_resolve_as_duckdb_resolves_them(written: str, canonical: str) -> None:
    assert canonical_type(written) == canonical


@pytest.mark.parametrize("bad", ["nope", "varchar; drop table x", "", "x" * 300, "INT)"])
def test_an_unknown_type_is_refused_naming_the_column(bad: str) -> None:
    with pytest.raises(ValueError, match="'reading'"):
        Layer.model_validate({"contract": {"columns": {"reading": bad}}})


def test_a_contract_is_stored_in_duckdbs_spelling() -> None:
    layer = Layer.model_validate({"contract": {"columns": {"a": "int", "b": "Text"}},
                                  "reject_limit": 0.05})
    assert layer.model_dump(mode="json")["contract"] == {
        "columns": {"a": "INTEGER", "b": "VARCHAR"}, "on_drift": "fail"}
    with pytest.raises(ValueError, match="named twice"):
        Layer.model_validate({"contract": {"columns": {"a": "int", "A": "int"}}})
    with pytest.raises(ValueError, match="reject_limit"):
        Layer.model_validate({"reject_limit": 1.5})
