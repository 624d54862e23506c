"""Where the data path's time goes inside DuckDB: Strata's engine next to `ref_duckdb.py`,
statement by statement, with DuckDB's own profiler (`enable_profiling`, operator timings).

    python -m bench.profile_engine --landing data/bench/orders/10m-f10-s42 [--tiny]

Strata: the four stages of `examples/orders_job.json` run in this process through
`DuckDBEngine().run_stage` (the executor's code, unchanged); `open_connection` is wrapped to turn
DuckDB's profiler on and `_StageRun._run` to time each statement and keep its three hottest
operators; the pyarrow passes (`_arrow_ods`, CSV to ODS, and `_write_split`, the unordered
layer and its rejects) are timed as a whole. The baseline: `$REFDATA/ref_duckdb.py`'s `run()`
with `duckdb.connect` wrapped the same way. Per stage: wall, process CPU (all threads), peak RSS
(VmHWM, reset per stage), and per statement: seconds and top operators. `--tiny` runs the tiny
job 20 times instead and reports the per-stage fixed cost (what a 20-row stage costs, Python and
DuckDB).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb

from app.domain.params import JobParams
from app.domain.states import STAGES, Stage
from app.executor.engine import duckdb_engine
from app.executor.engine.base import CancelToken, Progress, StageRequest
from bench.common import REPO, bench_dir, median, refdata_dir, reset_peak, status_kib, tiny_job

JOB = REPO / "examples" / "orders_job.json"


def _operators(con: Any, top: int = 3) -> list[tuple[str, float, int]]:
    """The `top` operators by own time in the last query's profile."""
    try:
        info = json.loads(con.get_profiling_information(format="json"))
    except (duckdb.Error, ValueError):
        return []
    found: list[tuple[str, float, int]] = []

    def walk(node: dict[str, Any]) -> None:
        name = str(node.get("operator_name") or node.get("name") or "?").strip()
        found.append((name, float(node.get("operator_timing") or node.get("timing") or 0.0),
                      int(node.get("intermediate_rows") or node.get("operator_cardinality")
                          or 0)))
        for child in node.get("children", []):
            walk(child)

    for child in info.get("children", []) or info.get("operator", []):
        walk(child)
    return sorted(found, key=lambda t: -t[1])[:top]


def _short(sql: str) -> str:
    text = " ".join(sql.split())
    return text[:140] + ("…" if len(text) > 140 else "")


class _Recorder:
    def __init__(self) -> None:
        self.statements: list[dict[str, Any]] = []

    def record(self, sql: str, seconds: float, con: Any) -> None:
        self.statements.append({"sql": _short(sql), "seconds": round(seconds, 4),
                                "operators": [(n, round(t, 3), r) for n, t, r in
                                              _operators(con)]})


@contextlib.contextmanager
def _patched_engine(recorder: _Recorder) -> Iterator[None]:
    original_open = duckdb_engine.open_connection
    original_run = duckdb_engine._StageRun._run
    original_split = duckdb_engine._StageRun._write_split
    original_ods = duckdb_engine._StageRun._arrow_ods

    def open_with_profiling(**kwargs: Any) -> duckdb.DuckDBPyConnection:
        con = original_open(**kwargs)
        con.execute("SET enable_profiling = 'no_output'")
        return con

    def timed_run(self: Any, con: Any, monitor: Any, sql: str, kind: str) -> Any:
        started = time.perf_counter()
        result = original_run(self, con, monitor, sql, kind)
        recorder.record(sql, time.perf_counter() - started, con)
        return result

    def timed_split(self: Any, con: Any, monitor: Any, sql: str) -> Any:
        started = time.perf_counter()
        result = original_split(self, con, monitor, sql)
        recorder.record("arrow split: " + sql, time.perf_counter() - started, con)
        return result

    def timed_ods(self: Any, con: Any) -> Any:
        started = time.perf_counter()
        result = original_ods(self, con)
        if result is not None:
            recorder.statements.append({"sql": "pyarrow CSV -> Parquet (csv_arrow)",
                                        "seconds": round(time.perf_counter() - started, 4),
                                        "operators": []})
        return result

    duckdb_engine.open_connection = open_with_profiling
    setattr(duckdb_engine._StageRun, "_run", timed_run)  # noqa: B010
    setattr(duckdb_engine._StageRun, "_write_split", timed_split)  # noqa: B010
    setattr(duckdb_engine._StageRun, "_arrow_ods", timed_ods)  # noqa: B010
    try:
        yield
    finally:
        duckdb_engine.open_connection = original_open
        setattr(duckdb_engine._StageRun, "_run", original_run)  # noqa: B010
        setattr(duckdb_engine._StageRun, "_write_split", original_split)  # noqa: B010
        setattr(duckdb_engine._StageRun, "_arrow_ods", original_ods)  # noqa: B010


def _measure(step: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    reset_peak(os.getpid())
    cpu0, t0 = time.process_time(), time.perf_counter()
    value = step()
    return value, {"wall": time.perf_counter() - t0, "cpu": time.process_time() - cpu0,
                   "peak_mib": status_kib(os.getpid(), "VmHWM") / 1024}


def strata_stages(landing: Path, work: Path, params: dict[str, Any],
                  stages: tuple[Stage, ...] = STAGES, job_id: str | None = None,
                  ) -> list[dict[str, Any]]:
    """Run the stages with the executor's engine; per-stage figures and per-statement timings."""
    job = JobParams.model_validate(params)
    job_id = job_id or f"profile-{uuid.uuid4().hex[:8]}"
    engine = duckdb_engine.DuckDBEngine()
    out = []
    for stage in stages:
        recorder = _Recorder()
        request = StageRequest(job_id=job_id, stage=stage, params=job, landing_dir=landing,
                               warehouse_dir=work, threads=job.concurrency)

        def report(_: Progress) -> None:
            return None

        def step(r: StageRequest = request) -> Any:
            return engine.run_stage(r, report, CancelToken())

        with _patched_engine(recorder):
            result, figures = _measure(step)
        out.append({"stage": stage.value, "layer": stage.layer, "rows": result.rows,
                    "engine_seconds": result.seconds, **figures,
                    "statements": recorder.statements})
    return out


class _ProfiledConnection:
    """`ref_duckdb.py` calls execute/executemany; time and profile each execute."""

    def __init__(self, con: duckdb.DuckDBPyConnection, recorder: _Recorder) -> None:
        self._con = con
        self._recorder = recorder
        con.execute("SET enable_profiling = 'no_output'")

    def execute(self, sql: str, *args: Any) -> Any:
        started = time.perf_counter()
        result = self._con.execute(sql, *args)
        if sql.lstrip().upper().startswith(("COPY", "CREATE")):
            self._recorder.record(sql, time.perf_counter() - started, self._con)
        return result

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._con.executemany(sql, *args)


def ref_stages(landing: Path, work: Path) -> list[dict[str, Any]]:
    refdata = refdata_dir()
    sys.path.insert(0, str(refdata))
    try:
        spec = importlib.util.spec_from_file_location("ref_duckdb_profiled",
                                                      refdata / "ref_duckdb.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(refdata))
    recorder = _Recorder()
    connect = duckdb.connect
    # ref_duckdb.py uses duckdb.connect only
    module.duckdb = SimpleNamespace(  # type: ignore[attr-defined]
        connect=lambda *a, **k: _ProfiledConnection(connect(*a, **k), recorder))
    steps = module.run(landing, work)
    out = []
    while True:
        mark = len(recorder.statements)
        try:
            value, figures = _measure(lambda: next(steps))
        except StopIteration:
            break
        layer, rows = value[0], value[1]
        out.append({"layer": layer, "rows": rows, **figures,
                    "statements": recorder.statements[mark:]})
    return out


def tiny(work: Path, repeats: int = 20) -> dict[str, Any]:
    """The fixed cost of a stage: the tiny job's four stages, `repeats` times."""
    from bench.common import tiny_csv

    landing = work / "landing"
    (landing / "tiny").mkdir(parents=True, exist_ok=True)
    (landing / "tiny" / "numbers.csv").write_bytes(tiny_csv())
    per_stage: dict[str, list[dict[str, Any]]] = {s.value: [] for s in STAGES}
    for _ in range(repeats):
        for stage in strata_stages(landing, work / "warehouse", tiny_job()["params"]):
            per_stage[stage["stage"]].append(stage)
    return {stage: {"wall_ms": median(r["wall"] * 1000 for r in runs),
                    "cpu_ms": median(r["cpu"] * 1000 for r in runs),
                    "in_statements_ms": median(sum(s["seconds"] for s in r["statements"]) * 1000
                                               for r in runs)}
            for stage, runs in per_stage.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--landing", type=Path, help="folder of orders_*.csv")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--only", choices=["strata", "ref"], default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = bench_dir() / "profile-engine"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result: dict[str, Any] = {}
    try:
        if args.tiny:
            result["tiny"] = tiny(work)
        else:
            if args.landing is None:
                parser.error("--landing is required (or --tiny)")
            landing = work / "landing"
            (landing / "orders").mkdir(parents=True)
            for f in sorted(args.landing.glob("*.csv")):
                os.link(f, landing / "orders" / f.name)  # the engine refuses symlinks out
            params = json.loads(JOB.read_text())["params"]
            if args.only in (None, "strata"):
                result["strata"] = strata_stages(landing.resolve(), work / "warehouse", params)
            if args.only in (None, "ref"):
                result["ref_duckdb"] = ref_stages(args.landing.resolve(), work / "ref")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
