"""Benchmark 5, incremental runs: the 31st night of a growing table against rebuilding it.

    python -m bench.incremental --rows-per-day 300000

One real `strata serve` process (SQLite, embedded executor, production defaults). The orders
dataset is cut into 31 time slices, one per "day" (`$REFDATA/gen_orders.py --files 31`; with
`generator="tests"` the project's own `tests.orders_data`, for small sizes). The pipeline
`orders-incremental` reads `orders/*/*.csv` with `source.mode: "new_files"`; its DWD layer types
and checks the rows and appends them to a Delta Lake table. Before each of 31 runs one day's file
is landed (`PUT /v1/landing/orders/day-NN/…`, not timed), so each run reads exactly that file.
Then the pipeline `orders-rebuild`, the same spec under another name, runs once over all 31 files
into a table of its own: the full rebuild. Last, what a run costs whatever its data: the same
spec as `orders-fixed-cost` over `fixed/*.csv`, three runs of 1,000 rows each (cut from day 1;
fewer when a day is smaller).

Per run: wall seconds (`POST /v1/pipelines/{name}/runs` sent → Succeeded seen, polled every
50 ms), the service's CPU seconds over the run (utime + stime of the process tree, which a
loaded machine disturbs less than wall time), the server's own created → ended seconds and the
per-layer seconds from `results.layers`. Afterwards the two tables are compared row by row with
DuckDB over `deltalake`'s pyarrow datasets (EXCEPT ALL both ways), independently of the service.

The table is appended, not merged: a row-wise typing and check layer is the same over one file
at a time as over all of them, so the incremental table must equal the rebuilt one exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    STOPPED,
    Databases,
    Service,
    bench_dir,
    loadavg,
    median,
    ratio,
    ref_python,
    refdata_dir,
    running,
    service_env,
    tree_cpu,
    upload,
)

INCREMENTAL = "orders-incremental"
REBUILD = "orders-rebuild"
FIXED = "orders-fixed-cost"
FIXED_ROWS = 1000
FIXED_RUNS = 3
LAYERS = ("ods", "dwd", "dws", "ds")
TARGET = 1 / 15
TYPED = (
    "WITH fx(currency, fx_rate) AS (VALUES ('USD', 1.0), ('EUR', 1.08), ('GBP', 1.27)), "
    "typed AS (SELECT o.*, TRY_CAST(o.event_ts AS TIMESTAMP) AS ts, "
    "TRY_CAST(o.quantity AS INTEGER) AS qty, TRY_CAST(o.unit_price AS DECIMAL(12, 2)) AS price, "
    "fx.fx_rate FROM ods o LEFT JOIN fx USING (currency)) "
    "SELECT order_id, ts AS event_ts, CAST(ts AS DATE) AS event_date, customer_id, "
    "lower(trim(region)) AS region, product_sku, qty AS quantity, price AS unit_price, "
    "currency, fx_rate, qty * CAST(price AS DOUBLE) * fx_rate AS amount_usd, status, "
    "_source_file, _row_number FROM typed")
CHECKS = [
    {"name": "bad_event_ts", "expr": "event_ts IS NOT NULL"},
    {"name": "bad_quantity", "expr": "quantity IS NOT NULL"},
    {"name": "non_positive_quantity", "expr": "quantity > 0"},
    {"name": "bad_unit_price", "expr": "unit_price IS NOT NULL"},
    {"name": "unknown_currency", "expr": "fx_rate IS NOT NULL"},
]


def pipeline_spec(path: str = "orders/*/*.csv") -> dict[str, Any]:
    """Each run: the new order files → typed, checked order events appended to the DWD table;
    a small daily summary downstream (not a table)."""
    return {"description": "bench: new order files each night, appended to one table",
            "params": {
                "source": {"path": path, "mode": "new_files", "format": "csv",
                           "options": {"header": True, "all_varchar": True}},
                "layers": {
                    "ods": {},
                    "dwd": {"sql": TYPED, "checks": CHECKS, "table": {"mode": "append"}},
                    "dws": {"sql": "SELECT event_date, region, count(*) AS orders, "
                                   "sum(amount_usd) AS revenue_usd FROM dwd GROUP BY ALL"}},
                "retries": 0}}


@dataclass
class IncrementalConfig:
    days: int = 31
    rows_per_day: int = 300_000
    generator: str = "refdata"
    """"refdata" ($REFDATA/gen_orders.py, needs the baseline venv) or "tests" (tests.orders_data,
    pure Python: small sizes only)."""
    seed: int = 42
    install: bool = True
    poll_interval: float = 0.05
    run_timeout: float = 1800.0
    keep: bool = False
    root: Path | None = None


def _label(rows: int) -> str:
    return f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


def day_files(cfg: IncrementalConfig) -> list[Path]:
    """One orders file per day, oldest first; made once per (days, rows, seed, generator)."""
    out = (bench_dir() / "incremental-data"
           / f"{cfg.generator}-{cfg.days}x{_label(cfg.rows_per_day)}-s{cfg.seed}")
    marker = out / ".complete"
    args = {"days": cfg.days, "rows_per_day": cfg.rows_per_day, "seed": cfg.seed,
            "generator": cfg.generator}
    if not (marker.exists() and json.loads(marker.read_text()) == args):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        if cfg.generator == "tests":
            from tests.orders_data import generate as generate_rows
            from tests.orders_data import write_csv

            write_csv(generate_rows(cfg.days * cfg.rows_per_day, seed=cfg.seed), out,
                      files=cfg.days)
        else:
            from bench.data_path import generate

            python, why = ref_python(cfg.install)
            if python is None:
                raise RuntimeError(why)
            made = generate(python, refdata_dir(), cfg.days * cfg.rows_per_day, cfg.days,
                            cfg.seed)
            for path in sorted(made.glob("*.csv")):
                try:
                    os.link(path, out / path.name)  # the generator's copy stays for data_path
                except OSError:
                    shutil.copy(path, out / path.name)
        marker.write_text(json.dumps(args))
    files = sorted(out.glob("*.csv"))
    if len(files) != cfg.days:
        raise RuntimeError(f"expected {cfg.days} day files in {out}, found {len(files)}")
    return files


async def run_pipeline(client: httpx.AsyncClient, service: Service, name: str,
                       cfg: IncrementalConfig) -> dict[str, Any]:
    """One run of the pipeline, start to Succeeded, with its wall and the service's CPU."""
    pid = service.pid
    load_before = loadavg()
    cpu0 = tree_cpu(pid)
    started = time.perf_counter()
    response = await client.post(f"/v1/pipelines/{name}/runs")
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/pipelines/{name}/runs: {response.status_code} "
                           f"{response.text[:500]}")
    job_id = str(response.json()["job_id"])
    job: dict[str, Any] = {}
    while time.perf_counter() - started < cfg.run_timeout:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job.get("status") in STOPPED:
            break
        await asyncio.sleep(cfg.poll_interval)
    wall = time.perf_counter() - started
    cpu = tree_cpu(pid) - cpu0
    if job.get("status") != "Succeeded":
        failed = [c for c in job.get("conditions", []) if c.get("status") == "False"]
        raise RuntimeError(f"{name} run {job_id} ended {job.get('status')}: {failed}")
    results = job.get("results") or {}
    layers = results.get("layers") or {}
    seconds = {k: float(layers.get(k, {}).get("seconds") or math.nan) for k in LAYERS}
    from bench.data_path import _seconds_between

    return {
        "pipeline": name, "job_id": job_id, "wall": wall, "cpu": cpu,
        "server_wall": _seconds_between(job.get("created_at"), job.get("ended_at")),
        "layers": seconds, "in_layers": sum(v for v in seconds.values() if not math.isnan(v)),
        "inputs": len(results.get("inputs") or []),
        "rows": int((layers.get("dwd") or {}).get("rows") or 0),
        "table": (results.get("tables") or {}).get("dwd"),
        "load_before": load_before, "load_after": loadavg(),
    }


def compare_tables(a: Path, b: Path) -> dict[str, Any]:
    """Row counts of both Delta tables and the rows of each missing from the other (DuckDB)."""
    import duckdb
    from deltalake import DeltaTable

    con = duckdb.connect()
    try:
        con.register("a", DeltaTable(str(a)).to_pyarrow_dataset())
        con.register("b", DeltaTable(str(b)).to_pyarrow_dataset())

        def one(sql: str) -> int:
            row = con.execute(sql).fetchone()
            return int(row[0]) if row else -1

        rows_a, rows_b = one("SELECT count(*) FROM a"), one("SELECT count(*) FROM b")
        only_a = one("SELECT count(*) FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b)")
        only_b = one("SELECT count(*) FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a)")
    finally:
        con.close()
    return {"rows_incremental": rows_a, "rows_rebuild": rows_b, "only_incremental": only_a,
            "only_rebuild": only_b,
            "equal": rows_a == rows_b and only_a == 0 and only_b == 0 and rows_a > 0}


def _table(warehouse: Path, pipeline: str) -> Path:
    found = sorted(warehouse.glob(f"tables/*/{pipeline}/dwd"))
    if len(found) != 1:
        raise RuntimeError(f"expected one table of {pipeline} under {warehouse}, found {found}")
    return found[0]


def slices(day_one: Path, root: Path, rows: int) -> list[Path]:
    """`FIXED_RUNS` files of `rows` rows each, cut from a day's file (header kept)."""
    out = root / "fixed"
    out.mkdir(parents=True, exist_ok=True)
    with day_one.open("rb") as handle:
        header = handle.readline()
        parts = []
        for n in range(1, FIXED_RUNS + 1):
            path = out / f"fixed_{n}.csv"
            path.write_bytes(header + b"".join(handle.readline() for _ in range(rows)))
            parts.append(path)
    return parts


def _break_even(fixed: float, per_row: float, days: int) -> float:
    """Rows per day from which a day's run costs at most 1/15 of rebuilding `days` days, with
    a run's cost = fixed + per_row x rows: 15 (f + a n) <= f + days a n."""
    if per_row <= 0 or days <= 1 / TARGET:
        return math.nan
    return (1 / TARGET - 1) * fixed / ((days - 1 / TARGET) * per_row)


def _growth(days: list[dict[str, Any]]) -> dict[str, float]:
    """Least-squares line through the per-run walls and CPU: the intercept is what a run costs
    whatever the table holds, the slope what each earlier day adds (0 if the table's size does
    not matter)."""
    out: dict[str, float] = {}
    n = len(days)
    if n < 2:
        return out
    xs = list(range(1, n + 1))
    mean_x = sum(xs) / n
    for key in ("wall", "cpu"):
        ys = [d[key] for d in days]
        mean_y = sum(ys) / n
        slope = (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
                 / sum((x - mean_x) ** 2 for x in xs))
        out[f"{key}_slope"] = slope
        out[f"{key}_intercept"] = mean_y - slope * mean_x
    return out


async def run(cfg: IncrementalConfig) -> dict[str, Any]:
    if cfg.generator == "refdata" and not (refdata_dir() / "gen_orders.py").is_file():
        return {"name": "incremental", "status": "skipped",
                "reason": f"REFDATA not found: {refdata_dir()} has no gen_orders.py "
                          "(set REFDATA=/path/to/refdata)"}
    files = await asyncio.to_thread(day_files, cfg)
    fixed_rows = max(1, min(FIXED_ROWS, cfg.rows_per_day // (2 * FIXED_RUNS)))
    root = cfg.root or bench_dir() / "incremental"
    shutil.rmtree(root, ignore_errors=True)
    databases = Databases(root / "template")
    url = await asyncio.to_thread(databases.sqlite, root)
    env = service_env(url, root)
    service = Service(root, env)
    days: list[dict[str, Any]] = []
    try:
        async with running(service), httpx.AsyncClient(base_url=service.url,
                                                       timeout=120) as client:
            for name, glob in ((INCREMENTAL, "orders/*/*.csv"), (REBUILD, "orders/*/*.csv"),
                               (FIXED, "fixed/*.csv")):
                created = await client.put(f"/v1/pipelines/{name}", json=pipeline_spec(glob))
                if created.status_code not in (200, 201):
                    raise RuntimeError(f"PUT /v1/pipelines/{name}: {created.status_code} "
                                       f"{created.text[:500]}")
            for n, path in enumerate(files, start=1):
                await asyncio.to_thread(upload, service.url, [path], f"orders/day-{n:02d}")
                result = await run_pipeline(client, service, INCREMENTAL, cfg)
                days.append({"day": n, **result})
                print(f"[incremental] day {n}: {result['wall']:.2f} s wall, "
                      f"{result['cpu']:.2f} s CPU, {result['rows']} rows", flush=True)
            rebuild = await run_pipeline(client, service, REBUILD, cfg)
            print(f"[incremental] rebuild: {rebuild['wall']:.2f} s wall, "
                  f"{rebuild['cpu']:.2f} s CPU, {rebuild['rows']} rows", flush=True)
            fixed: list[dict[str, Any]] = []
            parts = await asyncio.to_thread(slices, files[0], root, fixed_rows)
            for n, part in enumerate(parts, start=1):
                response = await client.put(f"/v1/landing/fixed/{part.name}",
                                            content=part.read_bytes())
                response.raise_for_status()
                fixed.append({"run": n, **await run_pipeline(client, service, FIXED, cfg)})
        warehouse = root / "warehouse"
        check = await asyncio.to_thread(compare_tables, _table(warehouse, INCREMENTAL),
                                        _table(warehouse, REBUILD))
    finally:
        databases.close()
        if not cfg.keep:
            shutil.rmtree(root / "warehouse", ignore_errors=True)
            shutil.rmtree(root / "landing", ignore_errors=True)
    last = days[-1]
    earlier = days[:-1]
    fixed_cpu = median(r["cpu"] for r in fixed)
    fixed_cost = {"wall": median(r["wall"] for r in fixed), "cpu": fixed_cpu,
                  "rows": fixed_rows, "runs": fixed}
    per_row_cpu = (rebuild["cpu"] - fixed_cpu) / max(1, cfg.days * cfg.rows_per_day)
    ratios = {"wall": ratio(last["wall"], rebuild["wall"]),
              "cpu": ratio(last["cpu"], rebuild["cpu"]),
              "server_wall": ratio(last["server_wall"], rebuild["server_wall"])}
    return {
        "name": "incremental", "status": "ok",
        "config": {"days": cfg.days, "rows_per_day": cfg.rows_per_day,
                   "generator": cfg.generator, "seed": cfg.seed, "table_mode": "append"},
        "landing_mib": sum(f.stat().st_size for f in files) / 2**20,
        "last": last, "rebuild": rebuild, "days": days, "ratios": ratios,
        "earlier": {"wall": median(d["wall"] for d in earlier),
                    "cpu": median(d["cpu"] for d in earlier),
                    "server_wall": median(d["server_wall"] for d in earlier),
                    "in_layers": median(d["in_layers"] for d in earlier)},
        "growth": _growth(days), "equal": check, "fixed": fixed_cost,
        "per_row_cpu": per_row_cpu, "break_even_rows_per_day": _break_even(
            fixed_cpu, per_row_cpu, cfg.days),
        "targets": [
            {"name": f"incremental, day {cfg.days} of {_label(cfg.rows_per_day)} rows/day: "
                     "run wall ≤ 1/15 of the full rebuild", "value": ratios["wall"],
             "limit": TARGET, "met": bool(ratios["wall"] <= TARGET),
             "cpu_ratio": ratios["cpu"]},
            {"name": "incremental table equal to the rebuilt one", "value": check["equal"],
             "limit": True, "met": bool(check["equal"])},
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--rows-per-day", type=int, default=300_000)
    parser.add_argument("--generator", choices=["refdata", "tests"], default="refdata")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    cfg = IncrementalConfig(days=args.days, rows_per_day=args.rows_per_day,
                            generator=args.generator, keep=args.keep)
    print(json.dumps(asyncio.run(run(cfg)), indent=2, default=str))


if __name__ == "__main__":
    main()
