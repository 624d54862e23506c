"""Benchmark 5, creates at scale: create, job GET and list latency as the stored jobs grow.

    python -m bench.scale --backends sqlite postgres --checkpoints 0 1000 10000 50000

Two real `strata serve` per backend (fresh databases, production defaults: the in-flight limit
is the default 100, only the per-minute create rate is lifted), with tokens, so the measured owner
is an ordinary owner and every query carries its owner filter. One service's jobs table grows
through the checkpoints; the other's stays empty, and every measurement alternates batches of
requests between the two, so that each ratio "at N ÷ at 0" is taken over the same moments of a
shared machine (the paired ratio; the plain ratio of the checkpoints is reported too). Between
checkpoints the table is filled straight through SQL in bulk (a POST per stored job would take
longer than the benchmark): `--owners` owners, the measured one holding `--owner-share` of the
jobs; each owner keeps up to `--waiting` jobs unfinished (suspended, in Pending or a stage: the
watcher leaves them alone) and the rest are Succeeded, Failed or Cancelled with their results, so
at 50,000 stored jobs about nine thousand are waiting, as in the service this was first measured
on; a third carry an idempotency key. PostgreSQL gets the `VACUUM ANALYZE` that autovacuum would
run; SQLite runs as the service leaves it (no ANALYZE).

At each checkpoint, one request at a time from this process, after a few unrecorded ones:

* `POST /v1/jobs` with a new Idempotency-Key (the key lookup, the in-flight check, the insert);
  created jobs are cancelled through SQL every `BATCH` creates, outside the measured windows, so
  the owner stays below its in-flight limit,
* `GET /v1/jobs/{id}` of a random job of the owner,
* `GET /v1/jobs?limit=50` (the owner's newest page with its total),
* the same as an admin, who sees every owner's jobs (as the local owner does without tokens).

Reported per checkpoint and request: latency p50/p99 and the service's CPU ms per request
(utime+stime of the service process over the measured windows; the PostgreSQL server's own CPU is
not in it), also net of the CPU the idle service burns in the background (read for
`idle_seconds` before the requests) over the same wall time. Targets: each request's latency
p50 at the largest checkpoint at most 1.2 times the empty reference's, measured in alternation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text, update

from bench.common import (
    Databases,
    Service,
    bench_dir,
    cpu_seconds,
    loadavg,
    pg_admin_dsn,
    quantile,
    ratio,
    reachable_backends,
    running,
    service_env,
    tiny_job,
    tree_cpu,
)

OWNER, TOKEN = "measured", "measured-token-0123"
ADMIN, ADMIN_TOKEN = "admin", "admin-token-0123"
REQUESTS = ("create", "get", "list", "list_all")
BATCH = 40
"""Creates between two cancellations: the owner's waiting jobs plus these stay under 100."""
TARGET = 1.2
_WAITING_STATUSES = ("Pending", "Pending", "LandingToODS", "ODSToDWD", "DWDToDWS", "DWSToDS")
_STOPPED = ("Succeeded", "Succeeded", "Succeeded", "Failed", "Cancelled")


@dataclass
class ScaleConfig:
    backends: list[str] = field(default_factory=lambda: ["sqlite", "postgres"])
    checkpoints: list[int] = field(default_factory=lambda: [0, 1_000, 10_000, 50_000])
    requests: int = 200
    """Measured requests of each kind per checkpoint."""
    warmup: int = 10
    owners: int = 200
    owner_share: float = 0.1
    waiting: int = 50
    """Unfinished jobs each owner keeps at most (below the in-flight limit of 100)."""
    idle_seconds: float = 3.0
    """How long the idle service's own CPU is read at each checkpoint."""
    root: Path | None = None


@dataclass
class _Filler:
    """Adds jobs to the table; remembers how many each owner has waiting."""

    url: str
    cfg: ScaleConfig
    stored: int = 0
    waiting: dict[str, int] = field(default_factory=dict)
    owned: list[str] = field(default_factory=list)
    """Ids of the measured owner's jobs (the GETs pick from them)."""
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def _owner(self, i: int) -> str:
        if self.rng.random() < self.cfg.owner_share:
            return OWNER
        return f"owner-{i % self.cfg.owners:03d}"

    def _row(self, i: int, now: datetime) -> dict[str, Any]:
        owner = self._owner(i)
        created = now - timedelta(seconds=100_000 - i)
        waits = (self.waiting.get(owner, 0) < self.cfg.waiting and self.rng.random() < 0.2)
        params = tiny_job()["params"]
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()), "name": f"fill-{i}", "description": None, "owner": owner,
            "suspend": waits, "params": params, "results": {}, "conditions": [], "attempt": 1,
            "version": 1, "idempotency_key": f"fill-{i}" if i % 3 == 0 else None,
            "request_hash": "0" * 64, "created_at": created, "updated_at": created,
            "started_at": None, "ended_at": None, "stage_started_at": None, "next_run_at": None,
            "lease_owner": None, "lease_expires_at": None, "pipeline": None, "pipeline_id": None,
            "pipeline_name": None}
        if waits:
            self.waiting[owner] = self.waiting.get(owner, 0) + 1
            row["status"] = self.rng.choice(_WAITING_STATUSES)
        else:
            status = self.rng.choice(_STOPPED)
            ended = created + timedelta(seconds=2)
            row.update(status=status, started_at=created, ended_at=ended, updated_at=ended,
                       results={"layers": {layer: {"rows": 20, "path": f"{layer}/{row['id']}"}
                                           for layer in ("ods", "dwd", "dws", "ds")}})
        if owner == OWNER:
            self.owned.append(row["id"])
        return row

    async def fill_to(self, target: int) -> float:
        """Insert jobs until `target` are stored; returns the seconds it took."""
        from app.store.db import create_engine
        from app.store.models import Job

        started = time.perf_counter()
        if target <= self.stored:
            return 0.0
        engine = create_engine(self.url)
        now = datetime.now(UTC)
        try:
            for start in range(self.stored, target, 5000):
                rows = [self._row(i, now) for i in range(start, min(start + 5000, target))]
                async with engine.begin() as conn:
                    await conn.execute(insert(Job), rows)
            self.stored = target
            if self.url.startswith("postgresql"):
                async with engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await conn.execute(text("VACUUM ANALYZE jobs"))
        finally:
            await engine.dispose()
        return time.perf_counter() - started

    async def cancel(self, ids: list[str]) -> None:
        from app.store.db import create_engine
        from app.store.models import Job

        engine = create_engine(self.url)
        try:
            async with engine.begin() as conn:
                await conn.execute(update(Job).where(Job.id.in_(ids))  # type: ignore[attr-defined]
                                   .values(status="Cancelled"))
        finally:
            await engine.dispose()


@dataclass
class Meter:
    """CPU seconds of the service process, and on PostgreSQL of the server backends connected
    to the benchmark's database (where the service's queries run)."""

    pid: int
    database: str | None = None
    _admin: Any = None

    async def _db_cpu(self) -> dict[int, float]:
        if self.database is None:
            return {}
        if self._admin is None:
            import asyncpg

            self._admin = await asyncpg.connect(pg_admin_dsn())
        rows = await self._admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1",
                                       self.database)
        return {int(r["pid"]): cpu_seconds(int(r["pid"])) for r in rows}

    async def read(self) -> tuple[float, dict[int, float]]:
        return tree_cpu(self.pid), await self._db_cpu()

    @staticmethod
    def used(before: tuple[float, dict[int, float]], after: tuple[float, dict[int, float]]
             ) -> tuple[float, float]:
        """(service, database) CPU seconds between two readings; a backend that was not there
        before counts whole, one gone since is lost (the pool keeps them)."""
        db = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in after[1].items()
                 if not math.isnan(cpu))
        return after[0] - before[0], db

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()


@dataclass
class _Window:
    """What a run of requests used: latencies, CPU of the service and the database, wall."""

    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0
    db_cpu: float = 0.0
    wall: float = 0.0

    def add(self, other: _Window, share: float = 1.0) -> None:
        self.cpu += other.cpu * share
        self.db_cpu += other.db_cpu * share
        self.wall += other.wall * share


def _stats(window: _Window, background: tuple[float, float]) -> dict[str, Any]:
    """Latency quantiles; CPU per request of the service and of the database server, and
    their sum less what both burn with no request at all (`background`, CPU seconds per
    second) over the same wall time."""
    n = len(window.latencies)
    if not n:
        return {"n": 0}
    idle = (background[0] + background[1]) * window.wall
    return {"n": n, "p50_ms": quantile(window.latencies, 0.5),
            "p99_ms": quantile(window.latencies, 0.99),
            "cpu_ms_per_req": window.cpu * 1000 / n,
            "db_cpu_ms_per_req": window.db_cpu * 1000 / n,
            "net_cpu_ms_per_req": (window.cpu + window.db_cpu - idle) * 1000 / n}


async def background_cpu(meter: Meter, seconds: float) -> tuple[float, float]:
    """CPU seconds per second the idle service (its watcher, scheduler, dispatcher) and the
    database server's backends for it use."""
    before, t0 = await meter.read(), time.perf_counter()
    await asyncio.sleep(seconds)
    service, db = Meter.used(before, await meter.read())
    took = time.perf_counter() - t0
    return service / took, db / took


async def _timed(meter: Meter, calls: list[Callable[[], Awaitable[httpx.Response]]],
                 ok: tuple[int, ...]) -> _Window:
    window = _Window()
    before, wall0 = await meter.read(), time.perf_counter()
    for call in calls:
        t0 = time.perf_counter()
        response = await call()
        window.latencies.append((time.perf_counter() - t0) * 1000)
        if response.status_code not in ok:
            raise RuntimeError(f"{response.request.method} {response.request.url.path}: "
                               f"{response.status_code} {response.text[:300]}")
    window.wall = time.perf_counter() - wall0
    window.cpu, window.db_cpu = Meter.used(before, await meter.read())
    return window


@dataclass
class _Subject:
    """One service under measurement, with its client, CPU meter and jobs table."""

    client: httpx.AsyncClient
    meter: Meter
    filler: _Filler
    created: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(11))

    def call(self, kind: str) -> Callable[[], Awaitable[httpx.Response]]:
        if kind == "create":
            return self._create
        if kind == "get":
            return lambda: self.client.get(f"/v1/jobs/{self.rng.choice(self.filler.owned)}")
        if kind == "list":
            return lambda: self.client.get("/v1/jobs", params={"limit": 50})
        return lambda: self.client.get("/v1/jobs", params={"limit": 50},
                                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    async def _create(self) -> httpx.Response:
        response = await self.client.post(
            "/v1/jobs", json=tiny_job("scale", suspend=True),
            headers={"Idempotency-Key": f"scale-{uuid.uuid4()}"})
        if response.status_code == 201:
            self.created.append(response.json()["job_id"])
        return response

    async def settle(self) -> None:
        """Cancel what the creates made, so the owner stays below its in-flight limit."""
        if self.created:
            self.filler.owned += self.created
            await self.filler.cancel(self.created)
            self.created.clear()


async def measure(subjects: list[_Subject], cfg: ScaleConfig) -> list[dict[str, Any]]:
    """Each request kind on every subject, in alternating batches of `BATCH` (so that each
    sees the same moments of a shared machine), `cfg.requests` recorded per kind and subject
    after `cfg.warmup` unrecorded."""
    backgrounds = [await background_cpu(s.meter, cfg.idle_seconds) for s in subjects]
    out: list[dict[str, Any]] = [
        {"stored": s.filler.stored, "load_before": loadavg(),
         "background_cpu_ms_per_s": b[0] * 1000, "background_db_cpu_ms_per_s": b[1] * 1000}
        for s, b in zip(subjects, backgrounds, strict=True)]
    total = cfg.warmup + cfg.requests
    for kind in REQUESTS:
        windows = [_Window() for _ in subjects]
        done = 0
        while done < total:
            n = min(BATCH, total - done)
            recorded = max(0, done + n - cfg.warmup) - max(0, done - cfg.warmup)
            turn = done // BATCH
            order = list(range(len(subjects)))
            for i in order[turn % len(order):] + order[:turn % len(order)]:
                subject = subjects[i]
                batch = await _timed(subject.meter, [subject.call(kind)] * n,
                                     (201,) if kind == "create" else (200,))
                if recorded:
                    windows[i].latencies += batch.latencies[n - recorded:]
                    windows[i].add(batch, recorded / n)
                await subject.settle()
            done += n
        for point, window, background in zip(out, windows, backgrounds, strict=True):
            point[kind] = _stats(window, background)
    for point, subject in zip(out, subjects, strict=True):
        listed = (await subject.client.get("/v1/jobs", params={"limit": 1})).json()["total"]
        point.update(owner_jobs=listed, load_after=loadavg())
    return out


def _growth(last: dict[str, Any], first: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {k: {"p50": ratio(last[k]["p50_ms"], first[k]["p50_ms"]),
                "cpu": ratio(last[k]["cpu_ms_per_req"], first[k]["cpu_ms_per_req"]),
                "net_cpu": ratio(last[k]["net_cpu_ms_per_req"], first[k]["net_cpu_ms_per_req"])}
            for k in REQUESTS}


@asynccontextmanager
async def _subject(cfg: ScaleConfig, backend: str, databases: Databases, root: Path
                   ) -> AsyncIterator[_Subject]:
    shutil.rmtree(root, ignore_errors=True)
    url = await asyncio.to_thread(databases.new, backend, root)
    env = service_env(url, root, STRATA_CREATES_PER_MINUTE=10_000_000,
                      STRATA_API_TOKENS=f"{OWNER}={TOKEN},{ADMIN}={ADMIN_TOKEN}",
                      STRATA_ADMIN_OWNERS=ADMIN)
    service = Service(root, env)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with running(service), httpx.AsyncClient(base_url=service.url, timeout=60,
                                                    headers=headers) as client:
        meter = Meter(service.pid, url.rsplit("/", 1)[1] if backend == "postgres" else None)
        try:
            yield _Subject(client, meter, _Filler(url, cfg))
        finally:
            await meter.close()


async def run_backend(cfg: ScaleConfig, backend: str, databases: Databases) -> dict[str, Any]:
    """Two services side by side: one whose jobs table grows through the checkpoints, and a
    reference whose table stays empty, measured in alternation with it."""
    root = (cfg.root or bench_dir() / "scale") / backend
    checkpoints: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    async with _subject(cfg, backend, databases, root / "filled") as filled, \
            _subject(cfg, backend, databases, root / "reference") as reference:
        for target in sorted(cfg.checkpoints):
            fill_seconds = await filled.filler.fill_to(target)
            point, ref = await measure([filled, reference], cfg)
            point.update(checkpoint=target, fill_seconds=fill_seconds,
                         owner_waiting=filled.filler.waiting.get(OWNER, 0),
                         waiting_all=sum(filled.filler.waiting.values()))
            point["paired"] = _growth(point, ref)
            checkpoints.append(point)
            references.append(ref)
            print(f"[scale] {backend} {target:,}: " + ", ".join(
                f"{k} p50 {point[k]['p50_ms']:.2f} ms (reference {ref[k]['p50_ms']:.2f}), "
                f"CPU {point[k]['cpu_ms_per_req']:.2f} + db {point[k]['db_cpu_ms_per_req']:.2f}"
                f" ms" for k in REQUESTS), flush=True)
    return {"backend": backend, "checkpoints": checkpoints, "references": references,
            "growth": _growth(checkpoints[-1], checkpoints[0]),
            "paired": checkpoints[-1]["paired"]}


async def run(cfg: ScaleConfig) -> dict[str, Any]:
    backends, skipped = await reachable_backends(list(cfg.backends))
    databases = Databases((cfg.root or bench_dir() / "scale") / "template")
    results = []
    try:
        for backend in backends:
            results.append(await run_backend(cfg, backend, databases))
    finally:
        await asyncio.to_thread(databases.close)
    largest = max(cfg.checkpoints)
    targets = []
    for r in results:
        for name, label in (("create", "POST /v1/jobs"), ("get", "GET /v1/jobs/{id}"),
                            ("list", "GET /v1/jobs"), ("list_all", "GET /v1/jobs as admin")):
            value = r["paired"][name]["p50"]
            targets.append({
                "name": f"Scale ({r['backend']}): {label} latency at {largest:,} stored jobs "
                        f"≤ {TARGET} x at 0 (paired)", "value": value, "limit": TARGET,
                "met": bool(value <= TARGET), "cpu_ratio": r["paired"][name]["net_cpu"]})
    return {"name": "scale", "status": "ok" if results else "skipped",
            "config": {"checkpoints": sorted(cfg.checkpoints), "requests": cfg.requests,
                       "idle_seconds": cfg.idle_seconds,
                       "warmup": cfg.warmup, "owners": cfg.owners,
                       "owner_share": cfg.owner_share, "waiting": cfg.waiting},
            "skipped_backends": skipped, "backends": results, "targets": targets,
            **({} if results else {"reason": "; ".join(skipped.values())})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[0, 1_000, 10_000, 50_000])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    cfg = ScaleConfig(backends=args.backends, checkpoints=args.checkpoints,
                      requests=args.requests)
    print(json.dumps(asyncio.run(run(cfg)), indent=2, default=str))


if __name__ == "__main__":
    main()
