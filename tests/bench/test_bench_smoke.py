"""Smoke versions of the five benchmarks (`make bench`): tiny sizes, a few seconds each.

They check only that each harness runs end to end against a real `strata serve` and returns
well-formed results that the report can render. There are no timing assertions: the numbers of
a smoke run mean nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import api, data_path, incremental, report, scale, stage_hop, throughput
from bench.common import quantile, ref_venv_dir, spread
from bench.profiles import summarise
from tests.orders_data import Dirt, generate, write_csv

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _renders(lines: list[str], title: str) -> None:
    assert lines[0].startswith(title)
    assert not any("Skipped" in line for line in lines)


@pytest.fixture
def bench_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every file of the harness under the test's tmp_path."""
    real_ref_venv = ref_venv_dir()
    monkeypatch.setenv("BENCH_DIR", str(tmp_path / "bench"))
    monkeypatch.setenv("BENCH_REF_VENV", str(real_ref_venv))
    return tmp_path / "bench"


async def test_data_path_runs_the_orders_job_through_a_real_service(
    bench_dir: Path, tmp_path: Path
) -> None:
    landing = tmp_path / "orders"
    write_csv(generate(1500, seed=3, dirt=Dirt().scaled(5)), landing, files=2)
    cfg = data_path.DataConfig(landing=landing, baselines=(), runs=1, warmup=0, install=False,
                               root=tmp_path / "run")
    result = await data_path.run(cfg)
    assert result["status"] == "ok"
    (size,) = result["sizes"]
    (run,) = size["runs"]
    assert run["impl"] == "strata" and run["status"] == "Succeeded"
    assert set(run["layers"]) == {"ods", "dwd", "dws", "ds"}
    assert all(_is_number(run[k]) for k in ("wall", "server_wall", "cpu", "peak_mib"))
    assert size["impls"]["strata"]["wall"]["n"] == 1
    json.dumps(result)
    _renders(report.data_section(result), "## 1.")


async def test_data_path_says_why_it_skips_without_refdata(
    bench_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REFDATA", str(tmp_path / "no-refdata-here"))
    result = await data_path.run(data_path.DataConfig(install=False))
    assert result["status"] == "skipped"
    assert "REFDATA" in result["reason"]
    assert report.data_section(result)[-2].startswith("Skipped: REFDATA")


async def test_data_path_with_the_baselines_and_the_equality_check(
    bench_dir: Path, tmp_path: Path
) -> None:
    refdata = data_path.refdata_dir()
    if not (refdata / "gen_orders.py").is_file() or not (ref_venv_dir() / "bin").is_dir():
        pytest.skip("needs REFDATA and the baseline venv (`make bench` creates it)")
    cfg = data_path.DataConfig(sizes=[3000], files=2, runs=1, warmup=0, install=False,
                               root=tmp_path / "run")
    result = await data_path.run(cfg)
    assert result["status"] == "ok", result.get("reason")
    (size,) = result["sizes"]
    assert [r["impl"] for r in size["runs"]] == ["strata", "duckdb", "polars"]
    assert {"wall/duckdb", "cpu/polars", "rss/duckdb"} <= set(size["ratios"])
    assert size["all_equal"] is True  # the DS layer equals ref_duckdb's (compare.py)
    assert {t["name"].split(": ", 1)[1] for t in result["targets"]} >= {
        "wall ≤ 1.0 x ref_duckdb", "DS equal to ref_duckdb's"}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_stage_hop_measures_hops_from_the_stored_timestamps(
    backend: str, bench_dir: Path, tmp_path: Path
) -> None:
    cfg = stage_hop.HopConfig(jobs=3, concurrency=[1, 2], runs=1, backend=backend,
                              root=tmp_path / "run")
    result = await stage_hop.run(cfg)
    assert result["status"] == "ok"
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 2]
    for level in result["levels"]:
        assert level["hop_ms"]["n"] == 3 * 3  # three hops per job
        assert all(_is_number(level["hop_ms"][k]) for k in ("median", "p90", "p99", "max"))
        assert level["statuses"] == [{"Succeeded": 3}]
    assert len(result["targets"]) == 4
    _renders(report.hop_section(result), "## 2.")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_throughput_runs_a_burst_and_counts_statements_per_tick(
    backend: str, bench_dir: Path, tmp_path: Path
) -> None:
    cfg = throughput.ThroughputConfig(jobs=4, runs=1, backend=backend, ticks=[3],
                                      tick_backends=[backend], probe_rate=10,
                                      root=tmp_path / "run")
    result = await throughput.run(cfg)
    assert result["status"] == "ok"
    (run,) = result["end_to_end"]
    assert run["submitted"] == 4 and run["statuses"] == {"Succeeded": 4}
    assert _is_number(run["jobs_per_s"]) and run["probe"]["requests"] >= 1
    (ticks,) = result["ticks"]
    for kind in ("new", "idle", "stage_done"):
        assert ticks[kind]["jobs_advanced"] == 3
        assert ticks[kind]["find_work"] >= 1
    assert ticks["new"]["per_job_total"] >= 3  # each new job is written at least once
    _renders(report.throughput_section(result), "## 3.")


async def test_api_compares_the_job_endpoints_with_healthz(
    bench_dir: Path, tmp_path: Path
) -> None:
    cfg = api.ApiConfig(backends=["sqlite"], runs=1, duration=1.0, warmup=0.0, jobs=2,
                        concurrency=4, tool="loadgen", cost_requests=20, root=tmp_path / "run")
    result = await api.run(cfg)
    assert result["status"] == "ok"
    (backend,) = result["backends"]
    assert set(backend["summary"]) == {"healthz", "get_job", "post_job"}
    for summary in backend["summary"].values():
        assert summary["requests"] >= 1 and summary["errors"] == 0
    assert _is_number(backend["ratios"]["get/healthz rps"])
    assert backend["summary"]["get_job"]["log_bytes_per_req"] > 0  # the access log stays on
    (cost,) = result["request_cost"]
    layers = ("healthz", "job_get", "dependencies", "service_read", "pooled_read", "document",
              "access_log", "driver_floor")
    assert all(_is_number(cost[layer]) and cost[layer] > 0 for layer in layers)
    _renders(report.api_section(result), "## 4.")


async def test_incremental_runs_grow_a_table_equal_to_the_full_rebuild(
    bench_dir: Path, tmp_path: Path
) -> None:
    cfg = incremental.IncrementalConfig(days=4, rows_per_day=300, generator="tests",
                                        root=tmp_path / "run")
    result = await incremental.run(cfg)
    assert result["status"] == "ok"
    assert [d["day"] for d in result["days"]] == [1, 2, 3, 4]
    assert all(d["inputs"] == 1 for d in result["days"])  # each run reads only its new file
    assert [d["table"]["version"] for d in result["days"]] == [0, 1, 2, 3]
    rebuild = result["rebuild"]
    assert rebuild["inputs"] == 4 and rebuild["table"] == {"version": 0, "operation": "APPEND"}
    assert rebuild["rows"] == sum(d["rows"] for d in result["days"])
    assert result["equal"]["equal"] is True and result["equal"]["only_rebuild"] == 0
    assert all(_is_number(result["ratios"][k]) for k in ("wall", "cpu", "server_wall"))
    assert {t["name"].split(": ", 1)[-1] for t in result["targets"]} >= {
        "run wall ≤ 1/15 of the full rebuild", "incremental table equal to the rebuilt one"}
    json.dumps(result)
    assert result["fixed"]["rows"] == 50 and len(result["fixed"]["runs"]) == 3
    assert math.isnan(result["break_even_rows_per_day"])  # 4 days: 1/15 is out of reach
    _renders(report.incremental_section(result), "## 5.")
    assert any("incremental" in row for row in report.targets_section({"incremental": result}))


def test_the_break_even_daily_volume_solves_fifteen_runs_against_one_rebuild() -> None:
    fixed, per_row, days = 0.2, 1e-6, 31
    rows = incremental._break_even(fixed, per_row, days)
    assert math.isclose(15 * (fixed + per_row * rows), fixed + days * per_row * rows)
    assert math.isnan(incremental._break_even(fixed, per_row, 15))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_scale_measures_each_request_at_each_checkpoint(
    bench_dir: Path, tmp_path: Path, backend: str
) -> None:
    cfg = scale.ScaleConfig(backends=[backend], checkpoints=[0, 300], requests=5, warmup=1,
                            owners=5, idle_seconds=0.2, root=tmp_path / "run")
    result = await scale.run(cfg)
    assert result["status"] == "ok"
    (run,) = result["backends"]
    first, last = run["checkpoints"]
    assert (first["stored"], last["stored"]) == (0, 300)
    assert last["owner_jobs"] > first["owner_jobs"] and last["waiting_all"] > 0
    for point in (first, last):
        for request in scale.REQUESTS:
            assert point[request]["n"] == 5
            assert all(_is_number(point[request][k])
                       for k in ("p50_ms", "p99_ms", "cpu_ms_per_req", "net_cpu_ms_per_req"))
    assert [p["stored"] for p in run["references"]] == [0, 0]
    assert all(_is_number(run["paired"][request]["p50"]) for request in scale.REQUESTS)
    assert len(result["targets"]) == 4
    json.dumps(result)
    _renders(report.scale_section(result), "## 6.")


def test_wrk_output_is_parsed() -> None:
    output = """Running 10s test @ http://127.0.0.1:8000
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.60ms    9.10ms 154.30ms   90.00%
    Req/Sec     3.46k   200.00     3.90k    70.00%
  Latency Distribution
     50%   12.10ms
     75%   16.00ms
     90%   21.00ms
     99%    1.20s
  34570 requests in 10.00s, 5.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   3457.00
"""
    parsed = api.parse_wrk(output)
    assert parsed["rps"] == 3457.0 and parsed["requests"] == 34570
    assert parsed["p50_ms"] == 12.1 and parsed["p99_ms"] == 1200.0 and parsed["errors"] == 3


def test_profile_summary_skips_waiting_threads(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "thread (1): MainThread;run (asyncio/runners.py:1);get_job (app/api/routes/jobs.py:2) 3\n"
        "thread (2): strata-stage_0;run_stage (app/executor/engine/duckdb_engine.py:3) 1\n"
        "thread (3): AnyIO worker thread;get (queue.py:4);wait (threading.py:5);"
        "PyThread_acquire_lock_timed (libpython3.11.so.1.0) 5\n")
    summary = summarise(raw)
    assert summary["samples"] == 4
    assert summary["threads"] == {"event loop (main thread)": 0.75,
                                  "executor stage threads (DuckDB)": 0.25}


def test_statistics() -> None:
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert math.isnan(quantile([], 0.5))
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
