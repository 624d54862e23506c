"""Benchmark 1, the data path: the orders job through a real `strata serve` next to the baselines.

    python -m bench.data_path --rows 1000000 10000000 --runs 3

For each size: the orders dataset from `$REFDATA/gen_orders.py` (seed 42, 10 files; made once
under BENCH_DIR and reused), a fresh `strata serve` process (SQLite, embedded executor,
production defaults), the files uploaded with `PUT /v1/landing/orders/…`, then rounds of
`examples/orders_job.json` over HTTP (POST, poll GET every 50 ms until Succeeded) interleaved with
`ref_duckdb.py` and `ref_polars.py` on the same files (each a fresh process, in the baseline venv;
the order rotates every round). The first round is a warm-up and is not counted.

Per run: wall seconds (Strata: POST sent → Succeeded seen; a baseline: its whole process), CPU
seconds (Strata: the service process's utime+stime over the run; a baseline: its rusage), peak RSS
(Strata: VmHWM of the service and its children, reset with clear_refs before each run; a baseline:
ru_maxrss), per-layer seconds (`results.layers.*.seconds`; the baselines' own printout), and the
load average before and after. Every Strata run's DS (and DWS) layer is checked equal to the
DuckDB baseline's with `$REFDATA/compare.py`'s own `diff` (match on event_date, region; doubles
within 1e-6 relative).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from bench.common import (
    REPO,
    STOPPED,
    Databases,
    Service,
    bench_dir,
    cpu_seconds,
    loadavg,
    median,
    ratio,
    ref_python,
    refdata_dir,
    relative_to_repo,
    reset_peak,
    run_timed,
    running,
    service_env,
    spread,
    tree_cpu,
    tree_peak_mib,
    tree_rss_mib,
    upload,
)
from bench.profiles import Profile

JOB = REPO / "examples" / "orders_job.json"
LAYERS = ("ods", "dwd", "dws", "ds")
_LAYER_LINE = re.compile(r"^(ods|dwd|dws|ds|total)\b.*?(\d+\.\d+) s\s*$")


@dataclass
class DataConfig:
    sizes: list[int] = field(default_factory=lambda: [1_000_000, 10_000_000])
    runs: int = 3
    warmup: int = 1
    files: int = 10
    seed: int = 42
    baselines: tuple[str, ...] = ("duckdb", "polars")
    install: bool = True
    """Create the baseline venv when it is missing."""
    landing: Path | None = None
    """Use these CSV files instead of generating the dataset (smoke tests); sizes is ignored."""
    keep: bool = False
    """Keep the service's warehouses and database afterwards."""
    poll_interval: float = 0.05
    job_timeout: float = 1800.0
    profile: bool = False
    """Record the service with py-spy (from the baseline venv) during the last Strata run."""
    root: Path | None = None


def label(rows: int) -> str:
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}m"
    if rows % 1000 == 0:
        return f"{rows // 1000}k"
    return str(rows)


def generate(python: Path, refdata: Path, rows: int, files: int, seed: int) -> Path:
    """The orders dataset, generated once per (rows, files, seed) and reused."""
    out = bench_dir() / "orders" / f"{label(rows)}-f{files}-s{seed}"
    marker = out / ".complete"
    args = {"rows": rows, "files": files, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == args:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = run_timed([str(python), str(refdata / "gen_orders.py"), "--rows", str(rows),
                      "--files", str(files), "--out", str(out), "--seed", str(seed)],
                     cwd=refdata)
    if done.returncode != 0:
        raise RuntimeError(f"gen_orders.py failed: {done.stdout[-2000:]}")
    marker.write_text(json.dumps(args))
    return out


def load_compare(refdata: Path) -> ModuleType:
    """`$REFDATA/compare.py` itself, so "equal" means exactly what it means there."""
    spec = importlib.util.spec_from_file_location("refdata_compare", refdata / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare_layers(compare: ModuleType, ref: Path, other: Path,
                   layers: tuple[str, ...] = ("ds", "dws")) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    try:
        out: dict[str, Any] = {}
        for layer in layers:
            rows_a, rows_b, bad = compare.diff(con, layer, str(ref), str(other))
            out[layer] = {"equal": rows_a == rows_b and bad == 0, "rows_ref": rows_a,
                          "rows_strata": rows_b, "differing": bad}
        return out
    finally:
        con.close()


def parse_layers(stdout: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in stdout.splitlines():
        match = _LAYER_LINE.match(line.strip())
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def _seconds_between(a: str | None, b: str | None) -> float:
    if not a or not b:
        return math.nan
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


async def strata_run(client: httpx.AsyncClient, service: Service, body: dict[str, Any],
                     cfg: DataConfig, profile_to: Path | None = None) -> dict[str, Any]:
    pid = service.pid
    reset = reset_peak(pid)
    baseline = tree_rss_mib(pid)
    sampled = baseline
    load_before = loadavg()
    profiler = Profile(pid, profile_to) if profile_to else None
    cpu0 = tree_cpu(pid)
    started = time.perf_counter()
    response = await client.post("/v1/jobs", json=body)
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/jobs: {response.status_code} {response.text[:500]}")
    job_id = str(response.json()["job_id"])
    deadline = started + cfg.job_timeout
    job: dict[str, Any] = {}
    while time.perf_counter() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        sampled = max(sampled, tree_rss_mib(pid))
        if job.get("status") in STOPPED:
            break
        await asyncio.sleep(cfg.poll_interval)
    wall = time.perf_counter() - started
    cpu = tree_cpu(pid) - cpu0
    if profiler is not None:
        profiler.stop()
    layers = (job.get("results") or {}).get("layers") or {}
    seconds = {name: float(layers.get(name, {}).get("seconds") or math.nan) for name in LAYERS}
    server = _seconds_between(job.get("created_at"), job.get("ended_at"))
    return {
        "impl": "strata", "job_id": job_id, "status": job.get("status"),
        "conditions": [c for c in job.get("conditions", []) if c.get("status") == "False"],
        "wall": wall, "server_wall": server, "cpu": cpu,
        "peak_mib": tree_peak_mib(pid) if reset else sampled, "peak_sampled_mib": sampled,
        "peak_method": "VmHWM after clear_refs" if reset else "VmRSS sampled every poll",
        "rss_before_mib": baseline, "layers": seconds,
        "in_process": sum(v for v in seconds.values() if not math.isnan(v)),
        "load_before": load_before, "load_after": loadavg(),
    }


def baseline_run(python: Path, refdata: Path, impl: str, landing: Path,
                 warehouse: Path) -> dict[str, Any]:
    done = run_timed([str(python), str(refdata / f"ref_{impl}.py"), "--landing", str(landing),
                      "--warehouse", str(warehouse)], cwd=refdata)
    if done.returncode != 0:
        raise RuntimeError(f"ref_{impl}.py failed ({done.returncode}): {done.stdout[-2000:]}")
    printed = parse_layers(done.stdout)
    return {
        "impl": impl, "status": "Succeeded", "wall": done.wall, "cpu": done.cpu,
        "peak_mib": done.peak_mib, "layers": {k: printed.get(k, math.nan) for k in LAYERS},
        "in_process": printed.get("total", math.nan),
        "load_before": done.load_before, "load_after": done.load_after,
    }


def summarise(runs: list[dict[str, Any]], impls: list[str]) -> dict[str, Any]:
    counted = [r for r in runs if not r.get("warmup")]
    summary: dict[str, Any] = {}
    for impl in impls:
        mine = [r for r in counted if r["impl"] == impl]
        summary[impl] = {
            "wall": spread([r["wall"] for r in mine]),
            "cpu": spread([r["cpu"] for r in mine]),
            "peak_mib": spread([r["peak_mib"] for r in mine]),
            "in_process": median(r["in_process"] for r in mine),
            "layers": {k: median(r["layers"].get(k, math.nan) for r in mine) for k in LAYERS},
        }
        if impl == "strata":
            summary[impl]["server_wall"] = spread([r["server_wall"] for r in mine])
            summary[impl]["rss_before_mib"] = median(r["rss_before_mib"] for r in mine)
    ratios: dict[str, float] = {}
    strata = summary.get("strata")
    for base in impls:
        if base == "strata" or strata is None:
            continue
        b = summary[base]
        ratios[f"wall/{base}"] = ratio(strata["wall"]["median"], b["wall"]["median"])
        ratios[f"cpu/{base}"] = ratio(strata["cpu"]["median"], b["cpu"]["median"])
        ratios[f"rss/{base}"] = ratio(strata["peak_mib"]["median"], b["peak_mib"]["median"])
        ratios[f"in_process/{base}"] = ratio(strata["in_process"], b["in_process"])
        paired = []
        rounds = sorted({r["round"] for r in counted})
        for n in rounds:
            s = [r for r in counted if r["round"] == n and r["impl"] == "strata"]
            o = [r for r in counted if r["round"] == n and r["impl"] == base]
            if s and o:
                paired.append(ratio(s[0]["wall"], o[0]["wall"]))
        ratios[f"wall/{base} paired"] = median(paired)
    return {"impls": summary, "ratios": ratios}


async def run_size(cfg: DataConfig, rows: int | None, python: Path | None, refdata: Path,
                   databases: Databases) -> dict[str, Any]:
    if cfg.landing is not None:
        landing = cfg.landing
        name = "custom"
    else:
        assert python is not None and rows is not None
        landing = await asyncio.to_thread(generate, python, refdata, rows, cfg.files, cfg.seed)
        name = label(rows)
    files = sorted(landing.glob("*.csv"))
    if not files:
        raise RuntimeError(f"no CSV files in {landing}")
    root = (cfg.root or bench_dir() / "data-path") / name
    shutil.rmtree(root, ignore_errors=True)
    url = await asyncio.to_thread(databases.sqlite, root)
    env = service_env(url, root)
    service = Service(root, env)
    baselines = [b for b in cfg.baselines if python is not None]
    compare = load_compare(refdata) if python is not None and "duckdb" in baselines else None
    body = json.loads(JOB.read_text())
    runs: list[dict[str, Any]] = []
    equal: list[dict[str, Any]] = []
    impls = ["strata", *baselines]
    async with running(service), httpx.AsyncClient(base_url=service.url, timeout=60) as client:
        idle_cpu0, idle_t0 = cpu_seconds(service.pid), time.perf_counter()
        await asyncio.sleep(2.0)
        idle = (cpu_seconds(service.pid) - idle_cpu0) / (time.perf_counter() - idle_t0)
        uploaded = await asyncio.to_thread(upload, service.url, files, "orders")
        total = cfg.warmup + cfg.runs
        for n in range(total):
            order = impls[n % len(impls):] + impls[:n % len(impls)]
            last = n == total - 1
            for impl in order:
                if impl == "strata":
                    profile_to = (bench_dir() / "profiles" / f"strata-{name}.txt"
                                  if cfg.profile and last else None)
                    result = await strata_run(client, service, body, cfg, profile_to)
                    if result["status"] != "Succeeded":
                        raise RuntimeError(f"the orders job ended {result['status']}: "
                                           f"{result['conditions']}")
                else:
                    assert python is not None
                    warehouse = root / "ref" / impl
                    result = await asyncio.to_thread(baseline_run, python, refdata, impl,
                                                     landing, warehouse)
                result.update(round=n, warmup=n < cfg.warmup)
                runs.append(result)
            strata = next(r for r in runs if r["round"] == n and r["impl"] == "strata")
            job_dir = root / "warehouse" / strata["job_id"]
            if compare is not None:
                check = await asyncio.to_thread(compare_layers, compare, root / "ref" / "duckdb",
                                                job_dir)
                equal.append({"round": n, **check})
            if not cfg.keep and not last:
                shutil.rmtree(job_dir, ignore_errors=True)
    if not cfg.keep:
        shutil.rmtree(root / "warehouse", ignore_errors=True)
        shutil.rmtree(root / "landing", ignore_errors=True)
    result = {
        "rows": rows, "label": name, "landing": str(landing), "files": len(files),
        "landing_mib": sum(f.stat().st_size for f in files) / 2**20,
        "upload_seconds": uploaded, "idle_cpu_share": idle,
        "service_env": {k: v for k, v in env.items() if "DIR" not in k and "URL" not in k},
        "runs": runs, **summarise(runs, impls),
        "equal": equal,
        "all_equal": bool(equal) and all(e[layer]["equal"] for e in equal for layer in ("ds",)),
    }
    return result


def targets(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Targets at the largest size: <= 1.0 x DuckDB, <= 1.0 x Polars, peak RSS ≤ DuckDB's."""
    if not sizes:
        return []
    big = max(sizes, key=lambda s: s["rows"] or 0)
    r = big["ratios"]
    where = f"{big['label']} rows"
    out = []
    for key, limit, text in (("wall/duckdb", 1.0, "wall ≤ 1.0 x ref_duckdb"),
                             ("wall/polars", 1.0, "wall ≤ 1.0 x ref_polars"),
                             ("rss/duckdb", 1.0, "peak RSS ≤ ref_duckdb's")):
        if key in r:
            value = r[key]
            cpu = r.get(key.replace("wall", "cpu")) if key.startswith("wall") else None
            out.append({"name": f"data path {where}: {text}", "value": value, "limit": limit,
                        "met": bool(value <= limit), "cpu_ratio": cpu})
    out.append({"name": f"data path {where}: DS equal to ref_duckdb's", "value": big["all_equal"],
                "limit": True, "met": bool(big["all_equal"])})
    return out


async def run(cfg: DataConfig) -> dict[str, Any]:
    refdata = refdata_dir()
    if cfg.landing is None and not (refdata / "gen_orders.py").is_file():
        return {"name": "data_path", "status": "skipped",
                "reason": f"REFDATA not found: {refdata} has no gen_orders.py "
                          "(set REFDATA=/path/to/refdata)"}
    python: Path | None = None
    if (refdata / "ref_duckdb.py").is_file() and (cfg.baselines or cfg.landing is None):
        python, why = await asyncio.to_thread(ref_python, cfg.install)
        if python is None and cfg.landing is None:
            return {"name": "data_path", "status": "skipped", "reason": why}
    databases = Databases((cfg.root or bench_dir() / "data-path") / "template")
    sizes = []
    try:
        for rows in [None] if cfg.landing is not None else cfg.sizes:
            sizes.append(await run_size(cfg, rows, python, refdata, databases))
    finally:
        databases.close()
    from bench.common import ref_versions

    return {"name": "data_path", "status": "ok", "refdata": relative_to_repo(refdata),
            "baseline_versions": ref_versions(python) if python else {},
            "config": {"runs": cfg.runs, "warmup": cfg.warmup, "files": cfg.files,
                       "seed": cfg.seed, "baselines": list(cfg.baselines) if python else []},
            "sizes": sizes, "targets": targets(sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    cfg = DataConfig(sizes=args.rows, runs=args.runs, warmup=args.warmup,
                     install=not args.no_install, profile=args.profile, keep=args.keep)
    print(json.dumps(asyncio.run(run(cfg)), indent=2, default=str))


if __name__ == "__main__":
    main()
