"""The Spark engine on a real standalone cluster (a master and two workers as processes) and
through a real Spark Connect server on that cluster: the reference orders job gives the DuckDB
engine's layers, progress rises to 100 %, and a cancel stops a running stage.

Minutes on a small machine, so apart from `make test`: `make spark-test` runs them (the
`spark_cluster` marker). The landing and warehouse folders are on local disk, which the driver,
the Connect server and the workers share because they all run here.
"""

from __future__ import annotations

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
    pytest.skip("a Spark cluster needs a Java runtime (java on PATH)", allow_module_level=True)

from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.engine.base import CancelToken, LayerResult, Progress, StageCancelled
from app.executor.engine.duckdb_engine import DuckDBEngine
from app.executor.engine.spark_engine import SparkEngine
from tests.executor.engine.test_spark_engine import (
    JOB,
    KEYS,
    assert_same_rows,
    by_key,
    read_layer,
    request_for,
    run_job,
)
from tests.orders_data import Dirt, generate, write_csv
from tests.spark_cluster import SparkCluster, application_conf

pytestmark = [
    pytest.mark.spark_cluster,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    with SparkCluster(tmp_path_factory.mktemp("spark-cluster")) as running:
        yield running


@pytest.fixture(scope="module", params=["standalone", "connect"])
def engine(request: pytest.FixtureRequest, cluster: SparkCluster) -> Iterator[SparkEngine]:
    """The engine as an executor configures it: `STRATA_SPARK_MASTER=spark://…` or `sc://…`."""
    if request.param == "connect":
        engine = SparkEngine(cluster.start_connect(), app_name="strata-tests")
    else:
        engine = SparkEngine(cluster.master_url, app_name="strata-tests",
                             conf=application_conf())
    try:
        yield engine
    finally:
        engine.close()
        cluster.stop_connect()


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("landing")
    write_csv(generate(3000, seed=7, dirt=Dirt().scaled(10)), folder / "orders", files=3)
    return folder


@pytest.fixture(scope="module")
def duckdb_layers(landing: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    warehouse = tmp_path_factory.mktemp("warehouse-duckdb")
    run_job(DuckDBEngine(), landing, warehouse, JobParams.model_validate(JOB["params"]))
    return warehouse / "job-1"


@pytest.fixture(scope="module")
def cluster_run(
    engine: SparkEngine, landing: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, LayerResult], dict[str, list[Progress]]]:
    warehouse = tmp_path_factory.mktemp("warehouse-cluster")
    results, reports = run_job(engine, landing, warehouse, JobParams.model_validate(JOB["params"]))
    return warehouse / "job-1", results, reports


def test_the_reference_job_gives_duckdbs_layers(
    cluster_run: tuple[Path, dict[str, LayerResult], Any], duckdb_layers: Path
) -> None:
    job_dir, results, _ = cluster_run
    assert results["dwd"].rejects > 0 and results["dwd"].deduped > 0
    for layer in ("ods", "dwd", "dwd_rejects", "dws", "ds"):
        ours, reference = read_layer(job_dir / layer), read_layer(duckdb_layers / layer)
        assert ours.schema.names == reference.schema.names, layer
        assert_same_rows(by_key(ours, KEYS[layer]), by_key(reference, KEYS[layer]), layer)
    assert_same_rows(read_layer(job_dir / "ds").to_pylist(),
                     read_layer(duckdb_layers / "ds").to_pylist(), "ds in ORDER BY order")


def test_progress_rises_to_100_percent(
    cluster_run: tuple[Path, dict[str, LayerResult], dict[str, list[Progress]]],
) -> None:
    _, results, reports = cluster_run
    for layer, seen in reports.items():
        percents = [p.percent for p in seen]
        assert percents == sorted(percents) and percents[-1] == 100.0, layer
        assert seen[-1].processed == seen[-1].total > 0, layer
    assert reports["dwd"][-1].total == results["ods"].rows


def test_cancel_stops_a_running_stage_and_leaves_no_output(
    engine: SparkEngine, cluster_run: tuple[Path, Any, Any], tmp_path: Path
) -> None:
    job_dir, _, _ = cluster_run
    shutil.copytree(job_dir / "ods", tmp_path / "job-c" / "ods")
    endless = (  # 4.5e7 SHA-512 digests: minutes on this cluster
        "SELECT a.order_id, max(sha2(concat(a.order_id, b.order_id, c.customer_id), 512)) AS h "
        "FROM ods a CROSS JOIN ods b CROSS JOIN (SELECT * FROM ods LIMIT 5) c GROUP BY a.order_id"
    )
    request = request_for(tmp_path, tmp_path, Stage.ODS_TO_DWD, {"dwd": {"sql": endless}},
                          job_id="job-c")
    token = CancelToken()
    started = threading.Event()
    outcome: list[BaseException | LayerResult] = []

    def run() -> None:
        try:
            outcome.append(engine.run_stage(request, lambda p: started.set(), token))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(120), "the stage never reported progress"
    cancelled_at = time.monotonic()
    token.cancel()
    worker.join(60)
    assert not worker.is_alive()
    assert time.monotonic() - cancelled_at < 30
    assert len(outcome) == 1 and isinstance(outcome[0], StageCancelled), outcome
    assert sorted(p.name for p in (tmp_path / "job-c").iterdir()) == ["ods"]
