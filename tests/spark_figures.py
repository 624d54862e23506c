"""The figures in docs/spark.md: the reference orders job, once, on each engine and on the same
landed files — DuckDB, Spark `local[2]`, the standalone cluster (`spark://`) and Spark Connect
(`sc://`) on that cluster.

    python -m tests.spark_figures [ROWS]      # prints a Markdown table

Each Spark run starts its own session (the first stage includes that start); the cluster is
started before the clock runs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.engine.base import CancelToken, StageRequest
from tests.orders_data import EXAMPLES, Dirt, generate, write_csv
from tests.spark_cluster import SparkCluster, application_conf


def run_job(engine: Any, landing: Path, warehouse: Path, params: JobParams) -> list[float]:
    """Seconds of each stage, in order."""
    seconds = []
    for stage in Stage:
        started = time.perf_counter()
        engine.run_stage(StageRequest(job_id="job-1", stage=stage, params=params,
                                      landing_dir=landing, warehouse_dir=warehouse),
                         lambda p: None, CancelToken())
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(name: str, make: Callable[[], Any], landing: Path, root: Path,
            params: JobParams) -> tuple[str, list[float]]:
    engine = make()
    try:
        folder = "".join(c if c.isalnum() else "-" for c in name)  # no glob characters
        return name, run_job(engine, landing, root / folder, params)
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()


def main() -> None:
    import json

    from app.executor.engine.duckdb_engine import DuckDBEngine
    from app.executor.engine.spark_engine import SparkEngine

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    root = Path(tempfile.mkdtemp(prefix="strata-spark-figures-"))
    landing = root / "landing"
    write_csv(generate(rows, seed=7, dirt=Dirt()), landing / "orders", files=4)
    params = JobParams.model_validate(json.loads((EXAMPLES / "orders_job.json").read_text())
                                      ["params"])
    local_conf = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"}
    results = [measure("duckdb", DuckDBEngine, landing, root, params),
               measure("local[2]", lambda: SparkEngine("local[2]", conf=local_conf), landing,
                       root, params)]
    with SparkCluster(root / "cluster") as cluster:
        results.append(measure("spark:// (2 workers)", lambda: SparkEngine(
            cluster.master_url, conf=application_conf()), landing, root, params))
        url = cluster.start_connect()
        results.append(measure("sc:// (Connect on the cluster)", lambda: SparkEngine(url),
                               landing, root, params))
    print(f"{rows:,} rows in 4 CSV files\n")
    print("| engine | " + " | ".join(s.value for s in Stage) + " | total |")
    print("| --- |" + " ---: |" * (len(Stage) + 1))
    for name, seconds in results:
        cells = " | ".join(f"{s:.1f}" for s in seconds)
        print(f"| {name} | {cells} | {sum(seconds):.1f} |")


if __name__ == "__main__":
    main()
