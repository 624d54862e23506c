"""Run the benchmarks and write docs/benchmarks.md.

    python -m bench                         # all six; medians of 3 runs (≈ 50-60 min here)
    python -m bench --quick                 # small sizes, one run, to BENCH_DIR/benchmarks-quick.md
    python -m bench --only hop api          # some; merged into BENCH_DIR/results.json
    python -m bench --only incremental      # day 31 of a growing table vs a full rebuild
    python -m bench --render                # only re-render the Markdown from results.json

Environment: `REFDATA` (default ../shared/refdata), `BENCH_DIR` (default data/bench),
`BENCH_REF_VENV` (default BENCH_DIR/venv-ref), `STRATA_TEST_PG_DSN` (PostgreSQL admin DSN,
default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import api, data_path, incremental, report, scale, stage_hop, throughput
from bench.common import REPO, bench_dir, loadavg, machine, pg_available

NAMES = {"data": "data_path", "hop": "stage_hop", "throughput": "throughput", "api": "api",
         "incremental": "incremental",
         "scale": "scale"}


def _clean(value: Any) -> Any:
    """JSON without NaN (null instead), paths as strings."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def configs(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    return {
        "data_path": data_path.DataConfig(
            sizes=args.rows or ([1_000_000] if quick else [1_000_000, 10_000_000]),
            runs=runs, warmup=0 if quick else 1, install=not args.no_install,
            profile=args.profile),
        "stage_hop": stage_hop.HopConfig(jobs=30 if quick else 200, concurrency=[1, 4],
                                         runs=runs),
        "throughput": throughput.ThroughputConfig(
            jobs=100 if quick else 1000, runs=runs, ticks=[10, 100] if quick else [10, 100, 1000],
            profile=args.profile),
        "api": api.ApiConfig(runs=runs, duration=3.0 if quick else 10.0,
                             warmup=1.0 if quick else 2.0, profile=args.profile),
        "incremental": incremental.IncrementalConfig(
            rows_per_day=2_000 if quick else 300_000, generator="tests" if quick else "refdata",
            install=not args.no_install),
        "scale": scale.ScaleConfig(checkpoints=[0, 2_000] if quick else [0, 1_000, 10_000, 50_000],
                                   requests=40 if quick else 200,
                                   idle_seconds=1.0 if quick else 3.0),
    }


RUNNERS: dict[str, Callable[[Any], Awaitable[dict[str, Any]]]] = {
    "data_path": data_path.run, "stage_hop": stage_hop.run, "throughput": throughput.run,
    "api": api.run, "incremental": incremental.run, "scale": scale.run}


async def run_all(args: argparse.Namespace, results: dict[str, Any], path: Path) -> None:
    cfgs = configs(args)
    command = "python -m bench " + shlex.join(sys.argv[1:])
    ok, version = await pg_available()
    results["meta"] = {"machine": machine(), "postgres": version if ok else f"absent ({version})"}
    for name in [NAMES[o] for o in args.only]:
        print(f"[bench] {name} … (load {loadavg()})", flush=True)
        started, load_start = time.perf_counter(), loadavg()
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        try:
            result = await RUNNERS[name](cfgs[name])
        except Exception as exc:  # one broken benchmark must not lose the others
            result = {"name": name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            print(f"[bench] {name} failed: {exc!r}", file=sys.stderr, flush=True)
        result.update(command=command, date=date, seconds=time.perf_counter() - started,
                      load_start=load_start, load_end=loadavg())
        results[name] = _clean(result)
        await asyncio.to_thread(path.write_text, json.dumps(results, indent=1))
        print(f"[bench] {name}: {result.get('status')} in {result['seconds'] / 60:.1f} min",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--only", nargs="+", choices=list(NAMES), default=list(NAMES))
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--rows", type=int, nargs="+", default=None,
                        help="data path sizes (default 1M and 10M; 1M with --quick)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not create the baseline venv; skip what needs it")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the service (data path, throughput, API)")
    parser.add_argument("--results", type=Path, default=None,
                        help="raw results JSON (default BENCH_DIR/results.json, merged)")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown (default docs/benchmarks.md; quick: BENCH_DIR/…)")
    parser.add_argument("--render", action="store_true", help="only re-render the Markdown")
    args = parser.parse_args()
    quick_name = "-quick" if args.quick else ""
    path = args.results or bench_dir() / f"results{quick_name}.json"
    out = args.out or (bench_dir() / "benchmarks-quick.md" if args.quick
                       else REPO / "docs" / "benchmarks.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    started = time.perf_counter()
    if not args.render:
        asyncio.run(run_all(args, results, path))
    report.write(results, out)
    print(f"[bench] wrote {out} ({(time.perf_counter() - started) / 60:.1f} min)")
    failed = [k for k in NAMES.values() if results.get(k, {}).get("status") == "failed"]
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
