"""Benchmark 3, throughput and scaling.

    python -m bench.throughput --jobs 1000 --runs 3 --ticks 10 100 1000

**End to end**: a real `strata serve` on a fresh PostgreSQL database (embedded executor,
production defaults, the per-owner create limits lifted), 1,000 tiny jobs POSTed at once (50
concurrent requests from this process), and, from a separate process (`bench.loadgen` as a
probe: 2 connections, 20 requests/s in all), `GET /v1/jobs/{id}` the whole time. Jobs completed
per second = jobs / (last `ended_at` - first `created_at`), from the database; completion is
polled in the database every 0.25 s, not through the API. Each run is repeated with the executor
in its own process (`strata executor`, `STRATA_EXECUTOR_URL` set; CPU of both processes).

**Statements per watcher tick**: an in-process `Watcher` (its defaults: 4 workers, claims of up
to 200) and `StageDriver` over a fresh test database holding N runnable jobs (N = 10, 100,
1,000), with an instant fake BatchManager client instead of the executor, so only the watcher's
own statements are counted. A SQLAlchemy `before_cursor_execute` listener counts every statement;
those issued by the tick itself (claim, and release on stop) are "to find work", those issued by
the per-job `advance-<id>` tasks are "per job". Three kinds of tick: *new* (the jobs are Pending:
start, create the first task, poll it), *idle* (every job's task still running: poll only) and
*stage done* (every task completed: record the layer, transition, create the next task).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from app.batch.testing import InMemoryBatchManager
from app.domain.params import JobParams
from app.domain.states import JobStatus
from app.store import jobs as store
from app.store.db import create_engine, session_factory, transaction
from app.store.models import Job, JobEvent
from app.store.types import utcnow
from app.watcher.event import StageDriver
from app.watcher.watcher import Watcher
from bench.common import (
    NO_LIMITS,
    REPO,
    STOPPED,
    Databases,
    Service,
    bench_dir,
    free_port,
    land_tiny,
    loadavg,
    machine_busy_seconds,
    median,
    poll,
    postgres_cpu,
    running,
    service_env,
    spread,
    tiny_job,
    tree_cpu,
)
from bench.profiles import Profile


@dataclass
class ThroughputConfig:
    jobs: int = 1000
    runs: int = 3
    backend: str = "postgres"
    submit_concurrency: int = 50
    probe_rate: float = 20.0
    timeout: float = 900.0
    ticks: list[int] = field(default_factory=lambda: [10, 100, 1000])
    tick_backends: list[str] = field(default_factory=lambda: ["postgres", "sqlite"])
    end_to_end: bool = True
    split: bool = True
    """Also run end to end with the executor in its own process (`strata executor`)."""
    profile: bool = False
    """py-spy the service during the last end-to-end run (BENCH_DIR/profiles)."""
    root: Path | None = None


# --- end to end ---------------------------------------------------------------------------


def start_probe(url: str, path: str, rate: float, out: Path, max_seconds: float) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", "--url", url, "--path", path, "-c", "2",
         "--rate", str(rate), "-d", str(max_seconds), "--out", str(out)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def stop_probe(proc: Any, out: Path) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    return dict(json.loads(out.read_text())) if out.exists() else {}


async def submit_all(client: httpx.AsyncClient, n: int, concurrency: int) -> dict[str, Any]:
    ids: list[str] = []
    codes: Counter[int] = Counter()
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            response = await client.post("/v1/jobs", json=tiny_job(f"burst-{i}"))
            codes[response.status_code] += 1
            if response.status_code == 201:
                ids.append(str(response.json()["job_id"]))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"ids": ids, "codes": dict(codes), "seconds": time.perf_counter() - started}


@asynccontextmanager
async def executor_process(url: str, folder: Path, split: bool) -> AsyncIterator[Any]:
    """`strata executor` on the same database and folders, when `split`; else nothing."""
    if not split:
        yield None
        return
    from tests.processes import StrataProcess

    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    proc = StrataProcess("executor", service_env(url, folder), free_port(),
                         folder / "executor.log")
    proc.start()
    try:
        await proc.ready(timeout=60)
        yield proc
    finally:
        await asyncio.to_thread(proc.stop)


async def end_to_end_run(cfg: ThroughputConfig, n: int, databases: Databases,
                         root: Path, *, split: bool = False) -> dict[str, Any]:
    folder = root / f"e2e-{'split' if split else 'embedded'}-run{n}"
    shutil.rmtree(folder, ignore_errors=True)
    url = await asyncio.to_thread(databases.new, cfg.backend, folder)
    db = create_engine(url)
    try:
        async with executor_process(url, folder, split) as executor:
            extra: dict[str, Any] = dict(NO_LIMITS)
            if executor is not None:
                extra["STRATA_EXECUTOR_URL"] = executor.url
            service = Service(folder, service_env(url, folder, **extra))
            result = await _end_to_end(cfg, n, service, db, executor)
        result["topology"] = "split" if split else "embedded"
        return result
    finally:
        await db.dispose()


async def _end_to_end(cfg: ThroughputConfig, n: int, service: Service, db: AsyncEngine,
                      executor: Any) -> dict[str, Any]:
    folder = service.root

    def cpu_now() -> float:
        total = tree_cpu(service.pid)
        if executor is not None and executor.proc is not None:
            total += tree_cpu(int(executor.proc.pid))
        return total

    async with running(service), httpx.AsyncClient(
        base_url=service.url, timeout=60,
        limits=httpx.Limits(max_connections=cfg.submit_concurrency),
    ) as client:
        await land_tiny(client)
        first = (await client.post("/v1/jobs", json=tiny_job("probe-target"))).json()
        probe_id = str(first["job_id"])
        probe_out = folder / "probe.json"
        probe = start_probe(service.url, f"/v1/jobs/{probe_id}", cfg.probe_rate, probe_out,
                            cfg.timeout + 120)
        await asyncio.sleep(1.0)  # the probe is connected and sending
        load_before = loadavg()
        cpu0, pg0, machine0 = cpu_now(), postgres_cpu(), machine_busy_seconds()
        profile = (Profile(service.pid, bench_dir() / "profiles" / "throughput-e2e.txt",
                           native=False, gil=True, rate=100)
                   if cfg.profile and n == cfg.runs - 1 and executor is None else None)
        started = time.perf_counter()
        submitted = await submit_all(client, cfg.jobs, cfg.submit_concurrency)
        ids = submitted["ids"]

        async def all_stopped() -> bool:
            async with db.connect() as conn:
                done = (await conn.execute(
                    select(func.count()).select_from(Job)
                    .where(col(Job.status).in_(STOPPED), col(Job.name).like("burst-%"))
                )).scalar_one()
            return int(done) >= len(ids)

        try:
            await poll(all_stopped, within=cfg.timeout, interval=0.25,
                       what=f"{len(ids)} jobs to stop")
            timed_out = False
        except TimeoutError:
            timed_out = True
        wall = time.perf_counter() - started
        cpu = cpu_now() - cpu0
        pg_cpu, machine_cpu = postgres_cpu() - pg0, machine_busy_seconds() - machine0
        load_after = loadavg()
        if profile is not None:
            await asyncio.to_thread(profile.stop)
        probe_result = await asyncio.to_thread(stop_probe, probe, probe_out)
    async with db.connect() as conn:
        row = (await conn.execute(
            select(func.min(Job.created_at), func.max(Job.ended_at), func.count())
            .where(col(Job.name).like("burst-%")))).one()
        rows = (await conn.execute(
            select(col(Job.status), func.count()).where(col(Job.name).like("burst-%"))
            .group_by(col(Job.status)))).all()
        statuses = {str(status): int(count) for status, count in rows}
    first_created, last_ended, count = row
    span = (last_ended - first_created).total_seconds() if first_created and last_ended else None
    succeeded = int(statuses.get("Succeeded", 0))
    return {
        "run": n, "submitted": len(ids), "submit_codes": submitted["codes"],
        "submit_seconds": submitted["seconds"], "statuses": statuses,
        "timed_out": timed_out, "span_seconds": span, "wall_seconds": wall,
        "jobs_per_s": succeeded / span if span else math.nan,
        "service_cpu": cpu, "service_cpu_ms_per_job": cpu * 1000 / max(succeeded, 1),
        "service_cpu_share": cpu / wall if wall else math.nan, "probe": probe_result,
        "postgres_cpu_ms_per_job": pg_cpu * 1000 / max(succeeded, 1),
        "machine_cpu_ms_per_job": machine_cpu * 1000 / max(succeeded, 1),
        "machine_cpu_share": machine_cpu / wall if wall else math.nan,
        "load_before": load_before, "load_after": load_after, "jobs_in_db": int(count),
    }


# --- statements per tick ------------------------------------------------------------------


class StatementCounter:
    """Counts statements by who issued them: the tick itself, or a job's advance task."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.find_work: Counter[str] = Counter()
        self.per_job: Counter[str] = Counter()
        self.jobs: set[str] = set()
        self.round_trips: Counter[str] = Counter()
        """Checkouts (each one a pre-ping on PostgreSQL), BEGINs and COMMITs: round trips the
        statement count does not show."""
        event.listen(engine.sync_engine, "before_cursor_execute", self._on_statement)
        event.listen(engine.sync_engine, "begin", self._on_begin)
        event.listen(engine.sync_engine, "commit", self._on_commit)
        event.listen(engine.sync_engine.pool, "checkout", self._on_checkout)

    def close(self) -> None:
        event.remove(self.engine.sync_engine, "before_cursor_execute", self._on_statement)
        event.remove(self.engine.sync_engine, "begin", self._on_begin)
        event.remove(self.engine.sync_engine, "commit", self._on_commit)
        event.remove(self.engine.sync_engine.pool, "checkout", self._on_checkout)

    def reset(self) -> None:
        self.find_work.clear()
        self.per_job.clear()
        self.jobs.clear()
        self.round_trips.clear()

    def _on_begin(self, *_args: Any) -> None:
        self.round_trips["begin"] += 1

    def _on_commit(self, *_args: Any) -> None:
        self.round_trips["commit"] += 1

    def _on_checkout(self, *_args: Any) -> None:
        self.round_trips["checkout"] += 1

    def _on_statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        name = task.get_name() if task is not None else ""
        kind = _kind(statement)
        if name.startswith("advance-"):
            self.per_job[kind] += 1
            self.jobs.add(name)
        else:
            self.find_work[kind] += 1


def _kind(statement: str) -> str:
    words = statement.split(None, 3)
    if not words:
        return "?"
    verb = words[0].upper()
    table = ""
    upper = statement.upper()
    for name in ("JOB_EVENTS", "EXECUTOR_TASKS", "JOBS"):
        if f" {name}" in upper:
            table = name.lower()
            break
    if "FOR UPDATE" in upper:
        verb += " … FOR UPDATE"
    return f"{verb} {table}".strip()


async def insert_jobs(sessions: Any, n: int) -> None:
    params = JobParams.model_validate(tiny_job()["params"]).model_dump(mode="json")
    now = utcnow()
    async with transaction(sessions) as session:
        for i in range(n):
            job_id = str(uuid.uuid4())
            session.add(Job(id=job_id, name=f"tick-{i}", owner="local",
                            status=JobStatus.PENDING.value, params=params, results={},
                            conditions=[], created_at=now, updated_at=now))
        await session.flush()
        rows = (await session.execute(select(col(Job.id)))).scalars().all()
        session.add_all([JobEvent(job_id=j, event="create", from_status=None,
                                  to_status=JobStatus.PENDING.value, at=now) for j in rows])


def _snapshot(counter: StatementCounter, started: int, seconds: float) -> dict[str, Any]:
    per_job_total = sum(counter.per_job.values())
    return {
        "jobs_advanced": started, "seconds": seconds,
        "find_work": sum(counter.find_work.values()), "find_work_by_kind": dict(counter.find_work),
        "per_job_total": per_job_total, "per_job_by_kind": dict(counter.per_job),
        "per_job_each": per_job_total / started if started else math.nan,
        "checkouts": counter.round_trips["checkout"], "begins": counter.round_trips["begin"],
        "commits": counter.round_trips["commit"],
    }


async def tick_counts(url: str, n: int, warehouse: Path) -> dict[str, Any]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    counter = StatementCounter(engine)
    fake = InMemoryBatchManager(start_on_poll=True)  # an instant executor
    driver = StageDriver(sessions, fake, AsyncLimiter(1_000_000, 1), warehouse)
    watcher = Watcher(sessions, driver)
    out: dict[str, Any] = {"runnable": n, "claim_limit": watcher.claim_limit,
                           "max_workers": watcher.max_workers}
    try:
        await insert_jobs(sessions, n)

        async def tick(label: str) -> None:
            counter.reset()
            t0 = time.perf_counter()
            started = await watcher.tick()
            out[label] = _snapshot(counter, started, time.perf_counter() - t0)

        # the claim alone, with every job runnable: what each pass (each wake-up) pays
        claim_ms = []
        rows = 0
        for _ in range(5):
            async with transaction(sessions) as session:
                t0 = time.perf_counter()
                claimed = await store.claim_runnable(
                    session, owner=watcher.owner, now=utcnow(), lease_seconds=30,
                    limit=watcher.claim_limit)
                claim_ms.append((time.perf_counter() - t0) * 1000)
                rows = len(claimed)
        out["claim"] = {"rows": rows, "median_ms": median(claim_ms)}
        await tick("new")
        # start every job (a tick claims at most claim_limit): bounded
        for _ in range(n // max(watcher.claim_limit, 1) + 2):
            if len(fake.tasks) >= n:
                break
            await watcher.tick()
        await tick("idle")
        fake.complete_all()
        await tick("stage_done")
        counter.reset()
        await watcher.stop()
        out["stop_release"] = sum(counter.find_work.values())
        async with engine.connect() as conn:
            states = (await conn.execute(select(col(Job.status), func.count())
                                         .group_by(col(Job.status)))).all()
        out["statuses_after"] = {s: int(c) for s, c in states}
    finally:
        counter.close()
        await engine.dispose()
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    probes = [r["probe"] for r in runs if r["probe"]]
    return {
        "jobs_per_s": spread([r["jobs_per_s"] for r in runs]),
        "service_cpu_ms_per_job": median(r["service_cpu_ms_per_job"] for r in runs),
        "service_cpu_share": median(r["service_cpu_share"] for r in runs),
        "postgres_cpu_ms_per_job": median(r.get("postgres_cpu_ms_per_job", math.nan)
                                          for r in runs),
        "machine_cpu_ms_per_job": median(r.get("machine_cpu_ms_per_job", math.nan)
                                         for r in runs),
        "submit_seconds": median(r["submit_seconds"] for r in runs),
        "probe_p50_ms": median(p.get("p50_ms", math.nan) for p in probes),
        "probe_p99_ms": median(p.get("p99_ms", math.nan) for p in probes),
        "probe_max_ms": max((p.get("max_ms", math.nan) for p in probes), default=math.nan),
        "probe_errors": sum(int(p.get("errors", 0)) for p in probes),
    }


async def run(cfg: ThroughputConfig) -> dict[str, Any]:
    root = cfg.root or bench_dir() / "throughput"
    from bench.common import pg_available

    pg_ok, pg_why = await pg_available()
    databases = Databases(root / "template")
    e2e: list[dict[str, Any]] = []
    e2e_split: list[dict[str, Any]] = []
    ticks: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    try:
        if cfg.end_to_end and (cfg.backend != "postgres" or pg_ok):
            for n in range(cfg.runs):
                e2e.append(await end_to_end_run(cfg, n, databases, root))
                if cfg.split:
                    e2e_split.append(await end_to_end_run(cfg, n, databases, root, split=True))
        elif cfg.end_to_end:
            skipped["end_to_end"] = pg_why
        for backend in cfg.tick_backends:
            if backend == "postgres" and not pg_ok:
                skipped[f"ticks/{backend}"] = pg_why
                continue
            for n in cfg.ticks:
                folder = root / f"ticks-{backend}-{n}"
                shutil.rmtree(folder, ignore_errors=True)
                url = await asyncio.to_thread(databases.new, backend, folder)
                result = await tick_counts(url, n, folder / "warehouse")
                result["backend"] = backend
                ticks.append(result)
    finally:
        await asyncio.to_thread(databases.close)
    summary: dict[str, Any] = {}
    targets = []
    if e2e:
        summary = summarise(e2e)
        value = summary["jobs_per_s"]["median"]
        targets.append({"name": f"throughput: ≥ 20 tiny jobs/s end to end ({cfg.jobs} at once)",
                        "value": value, "limit": 20.0, "met": bool(value >= 20.0),
                        "unit": "jobs/s"})
        cpu = summary["service_cpu_ms_per_job"]
        targets.append({"name": "throughput: service CPU ≤ 100 ms per tiny job (embedded default)",
                        "value": cpu, "limit": 100.0, "met": bool(cpu <= 100.0), "unit": "ms",
                        "note": "process CPU ÷ jobs: what two cores at 20 jobs/s allow"})
        p99 = summary["probe_p99_ms"]
        targets.append({"name": "throughput: GET /v1/jobs/{id} p99 ≤ 50 ms while it runs",
                        "value": p99, "limit": 50.0, "met": bool(p99 <= 50.0), "unit": "ms"})
    if e2e_split:
        value = summarise(e2e_split)["jobs_per_s"]["median"]
        targets.append({"name": "throughput, executor in its own process: ≥ 20 tiny jobs/s",
                        "value": value, "limit": 20.0, "met": bool(value >= 20.0),
                        "unit": "jobs/s"})
    by_backend: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in ticks:
        by_backend[t["backend"]].append(t)
    return {"name": "throughput", "status": "ok" if (e2e or ticks) else "skipped",
            "config": {"jobs": cfg.jobs, "runs": cfg.runs, "backend": cfg.backend,
                       "submit_concurrency": cfg.submit_concurrency,
                       "probe_rate": cfg.probe_rate, "ticks": cfg.ticks},
            "end_to_end": e2e, "summary": summary, "end_to_end_split": e2e_split,
            "summary_split": summarise(e2e_split) if e2e_split else {}, "ticks": ticks,
            "skipped": skipped,
            "targets": targets, **({} if (e2e or ticks) else {"reason": pg_why})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ticks", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--tick-backends", nargs="*", default=["postgres", "sqlite"])
    parser.add_argument("--no-end-to-end", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    cfg = ThroughputConfig(jobs=args.jobs, runs=args.runs, ticks=args.ticks,
                           tick_backends=args.tick_backends, end_to_end=not args.no_end_to_end,
                           profile=args.profile)
    print(json.dumps(asyncio.run(run(cfg)), indent=2, default=str))


if __name__ == "__main__":
    main()
