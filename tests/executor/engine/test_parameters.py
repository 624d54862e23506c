"""Typed run parameters in user SQL, on both engines: `$name` is bound as a value, never spliced.

Every test runs on DuckDB and on Spark (skipped without pyspark or Java) over the same five
landed rows, so the two engines are held to one behaviour.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.engine.base import (
    CancelToken,
    LayerResult,
    SandboxViolation,
    StageFailed,
    StageRequest,
    UnknownParameter,
)
from app.executor.engine.duckdb_engine import DuckDBEngine
from app.executor.engine.kernel import StageEngine
from tests.executor.engine.stages import rows_of, write_csv

SOURCE = {"path": "orders/*.csv", "format": "csv", "options": {"header": True, "all_varchar": True}}
LANDED = [
    ["1", "2026-01-03", "a"],
    ["2", "2026-01-04", "b"],
    ["3", "2026-01-05", "c"],
    ["4", "2026-01-06", "d"],
    ["5", "2026-01-06", "e"],
]
INJECTION = "x'; COPY ods TO 'pwned.csv'; SELECT '"


def _spark_engine(tmp: Path) -> StageEngine:
    pytest.importorskip("pyspark", reason="the Spark engine needs pyspark (the 'spark' extra)")
    pytest.importorskip("sqlglot", reason="the Spark engine needs sqlglot (the 'spark' extra)")
    if shutil.which("java") is None:
        pytest.skip("the Spark engine needs a Java runtime (java on PATH)")
    from app.executor.engine.spark_engine import SparkEngine

    return SparkEngine(
        "local[1]",
        app_name="strata-tests-parameters",
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.local.dir": str(tmp),
        },
    )


@pytest.fixture(
    scope="module",
    params=[
        "duckdb",
        pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.timeout(300)]),
    ],
)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StageEngine]:
    if request.param == "duckdb":
        yield DuckDBEngine()
        return
    spark = _spark_engine(tmp_path_factory.mktemp("spark-local"))
    yield spark
    spark.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def landed(engine: StageEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse whose job `base` has the five rows as its ODS."""
    root = tmp_path_factory.mktemp("parameters")
    write_csv(root / "landing" / "orders" / "o.csv", ["order_id", "day", "note"], LANDED)
    run(engine, root, Stage.LANDING_TO_ODS, {}, {}, job_id="base")
    return root


def run(
    engine: StageEngine,
    root: Path,
    stage: Stage,
    layers: dict[str, Any],
    parameters: dict[str, Any],
    job_id: str = "job-p",
) -> LayerResult:
    request = StageRequest(
        job_id=job_id,
        stage=stage,
        params=JobParams.model_validate({"source": SOURCE, "layers": layers}),
        landing_dir=root / "landing",
        warehouse_dir=root / "warehouse",
        parameters=parameters,
    )
    return engine.run_stage(request, lambda p: None, CancelToken())


@pytest.fixture
def job(landed: Path, tmp_path: Path) -> Path:
    """A fresh job (`job-p`) whose ODS is the five rows; the root of its folders."""
    (tmp_path / "landing").mkdir()
    shutil.copytree(landed / "warehouse" / "base" / "ods", tmp_path / "warehouse" / "job-p" / "ods")
    return tmp_path


def test_a_date_parameter_filters_rows(engine: StageEngine, job: Path) -> None:
    sql = (
        "SELECT CAST(order_id AS INTEGER) AS order_id, CAST(day AS DATE) AS day FROM ods "
        "WHERE CAST(day AS DATE) >= $since ORDER BY order_id"
    )
    result = run(
        engine, job, Stage.ODS_TO_DWD, {"dwd": {"sql": sql}}, {"since": dt.date(2026, 1, 5)}
    )
    assert result.rows == 3
    rows = rows_of(job / "warehouse" / "job-p" / "dwd")
    assert [(r["order_id"], r["day"]) for r in rows] == [
        (3, dt.date(2026, 1, 5)),
        (4, dt.date(2026, 1, 6)),
        (5, dt.date(2026, 1, 6)),
    ]


def test_parameters_work_in_checks_and_dedupe_order_by(engine: StageEngine, job: Path) -> None:
    layers = {
        "dwd": {
            "sql": "SELECT CAST(order_id AS INTEGER) AS order_id, CAST(day AS DATE) AS day "
            "FROM ods",
            "dedupe": {"keys": ["day"], "order_by": "abs(order_id - $pivot)"},
            "checks": [{"name": "before_until", "expr": "day < $until"}],
        }
    }
    result = run(
        engine, job, Stage.ODS_TO_DWD, layers, {"pivot": 5, "until": dt.date(2026, 1, 6)}
    )
    assert (result.rows, result.rejects, result.deduped) == (3, 1, 1)
    kept = sorted(r["order_id"] for r in rows_of(job / "warehouse" / "job-p" / "dwd"))
    assert kept == [1, 2, 3]
    rejects = rows_of(job / "warehouse" / "job-p" / "dwd_rejects")
    assert [(r["order_id"], r["_reject_reason"]) for r in rejects] == [(5, "before_until")]


def test_a_string_parameter_with_sql_in_it_is_data(engine: StageEngine, job: Path) -> None:
    layers = {
        "dwd": {
            "sql": "SELECT order_id, $label AS label FROM ods WHERE note <> $label",
            "checks": [{"name": "not_the_label", "expr": "label = $label"}],
        }
    }
    result = run(engine, job, Stage.ODS_TO_DWD, layers, {"label": INJECTION})
    assert (result.rows, result.rejects) == (5, 0)
    labels = {r["label"] for r in rows_of(job / "warehouse" / "job-p" / "dwd")}
    assert labels == {INJECTION}
    assert not list(job.rglob("pwned*"))


@pytest.mark.parametrize(
    ("layer", "where"),
    [
        ({"sql": "SELECT * FROM ods WHERE day >= $x"}, "layer dwd sql"),
        ({"checks": [{"name": "c", "expr": "day >= $x"}]}, "layer dwd check 'c'"),
        ({"dedupe": {"keys": ["day"], "order_by": "$x, order_id"}}, "layer dwd dedupe order_by"),
    ],
)
def test_an_unknown_parameter_is_refused_naming_it_and_the_layer(
    engine: StageEngine, job: Path, layer: dict[str, Any], where: str
) -> None:
    before = sorted(p.name for p in (job / "warehouse" / "job-p").iterdir())
    with pytest.raises(UnknownParameter) as caught:
        run(engine, job, Stage.ODS_TO_DWD, {"dwd": layer}, {"since": dt.date(2026, 1, 5)})
    message = str(caught.value)
    assert message.startswith(f"{where}: unknown parameter $x ")
    assert "$since" in message
    assert sorted(p.name for p in (job / "warehouse" / "job-p").iterdir()) == before


def test_without_parameters_a_reference_is_refused(engine: StageEngine, job: Path) -> None:
    with pytest.raises(StageFailed, match=r"unknown parameter \$day \(this run binds no param"):
        run(engine, job, Stage.ODS_TO_DWD, {"dwd": {"sql": "SELECT $day AS d FROM ods"}}, {})


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv($path)",
        "SELECT * FROM query_table($path)",
        "SELECT * FROM ods; COPY ods TO 'out.csv'",
        "COPY (SELECT * FROM ods WHERE note = $path) TO 'out.csv'",
    ],
)
def test_a_parameter_never_widens_the_sandbox(engine: StageEngine, job: Path, sql: str) -> None:
    with pytest.raises(SandboxViolation, match="layer dwd"):
        run(engine, job, Stage.ODS_TO_DWD, {"dwd": {"sql": sql}}, {"path": "/etc/passwd"})
    assert sorted(p.name for p in (job / "warehouse" / "job-p").iterdir()) == ["ods"]
