"""Benchmark 2, the stage hop: from a stage's task finishing to the next stage's task existing.

    python -m bench.stage_hop --jobs 200 --concurrency 1 4 --runs 3

A real `strata serve` on a fresh PostgreSQL database (embedded executor, production defaults:
watch interval 1 s, 4 watcher workers, 2 executor workers), the tiny job (20 rows, four
pass-through stages) submitted over HTTP `--jobs` times, `c` jobs in flight at a time (closed
loop: a job is submitted when one ends; completion is read from the database every 20 ms, not
through the API). Then, from the stored timestamps, per job and per pair of consecutive stages:

    hop = executor_tasks.created_at(stage N+1) - executor_tasks.finished_at(stage N)

Also reported: start (jobs.created_at → first task created), finish (last task finished →
jobs.ended_at), and the executor's own queue (task created → started) and run (started → finished)
times, which are not part of the hop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from app.domain.states import STAGES
from app.store.db import create_engine
from app.store.models import ExecutorTask, Job
from bench.common import (
    STOPPED,
    Databases,
    Service,
    bench_dir,
    land_tiny,
    loadavg,
    median,
    quantile,
    running,
    service_env,
    tiny_job,
    tree_cpu,
)


@dataclass
class HopConfig:
    jobs: int = 200
    concurrency: list[int] = field(default_factory=lambda: [1, 4])
    runs: int = 3
    backend: str = "postgres"
    job_timeout: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    """Extra STRATA_* settings for the service."""
    root: Path | None = None


def _ms(a: datetime | None, b: datetime | None) -> float:
    if a is None or b is None:
        return math.nan
    return (b - a).total_seconds() * 1000


async def run_jobs(client: httpx.AsyncClient, db: AsyncEngine, n: int, concurrency: int,
                   job_timeout: float) -> tuple[list[str], float]:
    """Submit `n` tiny jobs, `concurrency` at a time; wait for each to stop. Returns the ids."""
    done: dict[str, asyncio.Event] = {}
    ids: list[str] = []
    finished = asyncio.Event()

    async def watch() -> None:
        while not finished.is_set():
            waiting = [j for j, ev in done.items() if not ev.is_set()]
            if waiting:
                async with db.connect() as conn:
                    rows = (await conn.execute(
                        select(col(Job.id)).where(col(Job.id).in_(waiting),
                                                  col(Job.status).in_(STOPPED)))).all()
                for (job_id,) in rows:
                    done[job_id].set()
            await asyncio.sleep(0.02)

    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            response = await client.post("/v1/jobs", json=tiny_job(f"hop-{i}"))
            if response.status_code != 201:
                raise RuntimeError(f"POST /v1/jobs: {response.status_code} {response.text}")
            job_id = str(response.json()["job_id"])
            ids.append(job_id)
            done[job_id] = asyncio.Event()
            await asyncio.wait_for(done[job_id].wait(), timeout=job_timeout)

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        finished.set()
        await watcher
    return ids, time.perf_counter() - started


async def hops_of(db: AsyncEngine, ids: list[str]) -> dict[str, Any]:
    async with db.connect() as conn:
        tasks = (await conn.execute(
            select(*(col(c) for c in (ExecutorTask.job_id, ExecutorTask.stage,
                                      ExecutorTask.attempt, ExecutorTask.status,
                                      ExecutorTask.created_at, ExecutorTask.started_at,
                                      ExecutorTask.finished_at)))
            .where(col(ExecutorTask.job_id).in_(ids)))).all()
        jobs = (await conn.execute(
            select(*(col(c) for c in (Job.id, Job.status, Job.created_at, Job.ended_at)))
            .where(col(Job.id).in_(ids)))).all()
    by_job: dict[str, dict[str, Any]] = defaultdict(dict)
    for t in tasks:
        current = by_job[t.job_id].get(t.stage)
        if current is None or t.attempt > current.attempt:
            by_job[t.job_id][t.stage] = t
    order = [s.value for s in STAGES]
    hops: list[float] = []
    per_pair: dict[str, list[float]] = defaultdict(list)
    start: list[float] = []
    finish: list[float] = []
    queue: list[float] = []
    runtime: list[float] = []
    retried = 0
    for job in jobs:
        stages = by_job.get(job.id, {})
        retried += any(t.attempt > 1 for t in stages.values())
        for a, b in pairwise(order):
            if a in stages and b in stages:
                hop = _ms(stages[a].finished_at, stages[b].created_at)
                hops.append(hop)
                per_pair[f"{a}→{b}"].append(hop)
        if order[0] in stages:
            start.append(_ms(job.created_at, stages[order[0]].created_at))
        if order[-1] in stages and job.ended_at is not None:
            finish.append(_ms(stages[order[-1]].finished_at, job.ended_at))
        for t in stages.values():
            queue.append(_ms(t.created_at, t.started_at))
            runtime.append(_ms(t.started_at, t.finished_at))
    statuses: dict[str, int] = defaultdict(int)
    for job in jobs:
        statuses[job.status] += 1
    return {"hops": hops, "per_pair": dict(per_pair), "start": start, "finish": finish,
            "queue": queue, "task_run": runtime, "statuses": dict(statuses), "retried": retried}


def describe(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "median": quantile(values, 0.5), "p90": quantile(values, 0.9),
            "p99": quantile(values, 0.99), "max": max(values) if values else math.nan}


async def run(cfg: HopConfig) -> dict[str, Any]:
    root = cfg.root or bench_dir() / "stage-hop"
    databases = Databases(root / "template")
    if cfg.backend == "postgres":
        from bench.common import pg_available

        ok, why = await pg_available()
        if not ok:
            return {"name": "stage_hop", "status": "skipped", "reason": why}
    raw: dict[int, list[dict[str, Any]]] = defaultdict(list)
    try:
        for n in range(cfg.runs):
            for concurrency in cfg.concurrency:
                folder = root / f"run{n}-c{concurrency}"
                url = await asyncio.to_thread(databases.new, cfg.backend, folder)
                service = Service(folder, service_env(url, folder, **cfg.env))
                db = create_engine(url)
                try:
                    async with running(service), httpx.AsyncClient(base_url=service.url,
                                                                   timeout=30) as client:
                        await land_tiny(client)
                        load_before = loadavg()
                        cpu0 = tree_cpu(service.pid)
                        ids, seconds = await run_jobs(client, db, cfg.jobs, concurrency,
                                                      cfg.job_timeout)
                        cpu = tree_cpu(service.pid) - cpu0
                        measured = await hops_of(db, ids)
                    measured.update(run=n, concurrency=concurrency, seconds=seconds, cpu=cpu,
                                    load_before=load_before, load_after=loadavg())
                    raw[concurrency].append(measured)
                finally:
                    await db.dispose()
    finally:
        await asyncio.to_thread(databases.close)
    levels = []
    for concurrency, runs in raw.items():
        pooled = [h for r in runs for h in r["hops"]]
        pairs: dict[str, list[float]] = defaultdict(list)
        for r in runs:
            for pair, values in r["per_pair"].items():
                pairs[pair].extend(values)
        levels.append({
            "concurrency": concurrency, "jobs": cfg.jobs, "runs": len(runs),
            "hop_ms": describe(pooled),
            "run_medians_ms": [quantile(r["hops"], 0.5) for r in runs],
            "run_p99s_ms": [quantile(r["hops"], 0.99) for r in runs],
            "per_pair_median_ms": {p: quantile(v, 0.5) for p, v in pairs.items()},
            "start_ms": describe([v for r in runs for v in r["start"]]),
            "finish_ms": describe([v for r in runs for v in r["finish"]]),
            "executor_queue_ms": describe([v for r in runs for v in r["queue"]]),
            "executor_run_ms": describe([v for r in runs for v in r["task_run"]]),
            "jobs_per_s": median(cfg.jobs / r["seconds"] for r in runs),
            "service_cpu_ms_per_job": median(r["cpu"] * 1000 / cfg.jobs for r in runs),
            "statuses": [r["statuses"] for r in runs], "retried": sum(r["retried"] for r in runs),
            "load": [f"{r['load_before']} → {r['load_after']}" for r in runs],
        })
    targets = []
    for level in levels:
        hop = level["hop_ms"]
        where = f"stage hop, {level['concurrency']} job(s) in flight"
        targets.append({"name": f"{where}: median ≤ 20 ms", "value": hop["median"],
                        "limit": 20.0, "met": bool(hop["median"] <= 20.0), "unit": "ms"})
        targets.append({"name": f"{where}: p99 ≤ 100 ms", "value": hop["p99"], "limit": 100.0,
                        "met": bool(hop["p99"] <= 100.0), "unit": "ms"})
    return {"name": "stage_hop", "status": "ok", "backend": cfg.backend,
            "config": {"jobs": cfg.jobs, "concurrency": cfg.concurrency, "runs": cfg.runs,
                       "env": cfg.env},
            "levels": levels, "targets": targets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()
    cfg = HopConfig(jobs=args.jobs, concurrency=args.concurrency, runs=args.runs,
                    backend=args.backend)
    print(json.dumps(asyncio.run(run(cfg)), indent=2, default=str))


if __name__ == "__main__":
    main()
