"""Benchmark 5, creates at scale: create, job GET and list latency as the stored jobs grow.

    python -m bench.scale --backends sqlite postgres --checkpoints 0 1000 10000 50000

A real `strata serve` per backend (fresh database, production defaults: the in-flight limit is
the default 100, only the per-minute create rate is lifted), with tokens, so the measured owner is
an ordinary owner and every query carries its owner filter. Between checkpoints the jobs table is
filled straight through SQL in bulk (a POST per stored job would take longer than the benchmark):
`--owners` owners, the measured one holding `--owner-share` of the jobs; each owner keeps up to
`--waiting` jobs unfinished (suspended, in Pending or a stage: the watcher leaves them alone) and
the rest are Succeeded, Failed or Cancelled with their results, so at 50,000 stored jobs about
nine thousand are waiting, as in the service this was first measured on; a third carry an
idempotency key. PostgreSQL gets the `VACUUM ANALYZE` that autovacuum would run; SQLite runs as
the service leaves it (no ANALYZE).

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
p50 at the largest checkpoint at most 1.2 times the one at 0.
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
from collections.abc import Awaitable, Callable
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


async def measure(client: httpx.AsyncClient, meter: Meter, filler: _Filler,
                  cfg: ScaleConfig) -> dict[str, Any]:
    """The three requests at the current size, `cfg.requests` of each (plus the warm-up)."""
    body = tiny_job("scale", suspend=True)
    created: list[str] = []

    async def create() -> httpx.Response:
        response = await client.post("/v1/jobs", json=body,
                                     headers={"Idempotency-Key": f"scale-{uuid.uuid4()}"})
        if response.status_code == 201:
            created.append(response.json()["job_id"])
        return response

    background = await background_cpu(meter, cfg.idle_seconds)
    out: dict[str, Any] = {"stored": filler.stored, "load_before": loadavg(),
                           "background_cpu_ms_per_s": background[0] * 1000,
                           "background_db_cpu_ms_per_s": background[1] * 1000}
    creates = _Window()
    total = cfg.warmup + cfg.requests
    done = 0
    while done < total:
        n = min(BATCH, total - done)
        batch = await _timed(meter, [create] * n, (201,))
        recorded = max(0, done + n - cfg.warmup) - max(0, done - cfg.warmup)
        if recorded:
            creates.latencies += batch.latencies[n - recorded:]
            creates.add(batch, recorded / n)
        done += n
        filler.owned += created
        await filler.cancel(created)
        created.clear()
    out["create"] = _stats(creates, background)
    rng = random.Random(filler.stored)

    def get() -> Awaitable[httpx.Response]:
        return client.get(f"/v1/jobs/{rng.choice(filler.owned)}")

    def page() -> Awaitable[httpx.Response]:
        return client.get("/v1/jobs", params={"limit": 50})

    def page_all() -> Awaitable[httpx.Response]:
        return client.get("/v1/jobs", params={"limit": 50},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    for name, call in (("get", get), ("list", page), ("list_all", page_all)):
        await _timed(meter, [call] * cfg.warmup, (200,))
        out[name] = _stats(await _timed(meter, [call] * cfg.requests, (200,)), background)
    listed = (await client.get("/v1/jobs", params={"limit": 1})).json()["total"]
    out.update(owner_jobs=listed, load_after=loadavg())
    return out


async def _scan(cfg: ScaleConfig, backend: str, client: httpx.AsyncClient, meter: Meter,
                filler: _Filler, checkpoints: list[dict[str, Any]]) -> None:
    for target in sorted(cfg.checkpoints):
        fill_seconds = await filler.fill_to(target)
        point = await measure(client, meter, filler, cfg)
        point.update(checkpoint=target, fill_seconds=fill_seconds,
                     owner_waiting=filler.waiting.get(OWNER, 0),
                     waiting_all=sum(filler.waiting.values()))
        checkpoints.append(point)
        print(f"[scale] {backend} {target:,}: " + ", ".join(
            f"{k} p50 {point[k]['p50_ms']:.2f} ms, CPU {point[k]['cpu_ms_per_req']:.2f} + db "
            f"{point[k]['db_cpu_ms_per_req']:.2f} ms" for k in REQUESTS), flush=True)


async def run_backend(cfg: ScaleConfig, backend: str, databases: Databases) -> dict[str, Any]:
    root = (cfg.root or bench_dir() / "scale") / backend
    shutil.rmtree(root, ignore_errors=True)
    url = await asyncio.to_thread(databases.new, backend, root)
    env = service_env(url, root, STRATA_CREATES_PER_MINUTE=10_000_000,
                      STRATA_API_TOKENS=f"{OWNER}={TOKEN},{ADMIN}={ADMIN_TOKEN}",
                      STRATA_ADMIN_OWNERS=ADMIN)
    service = Service(root, env)
    filler = _Filler(url, cfg)
    checkpoints: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with running(service), httpx.AsyncClient(base_url=service.url, timeout=60,
                                                    headers=headers) as client:
        meter = Meter(service.pid, url.rsplit("/", 1)[1] if backend == "postgres" else None)
        try:
            await _scan(cfg, backend, client, meter, filler, checkpoints)
        finally:
            await meter.close()
    first, last = checkpoints[0], checkpoints[-1]

    growth = {k: {"p50": ratio(last[k]["p50_ms"], first[k]["p50_ms"]),
                  "cpu": ratio(last[k]["cpu_ms_per_req"], first[k]["cpu_ms_per_req"]),
                  "net_cpu": ratio(last[k]["net_cpu_ms_per_req"],
                                   first[k]["net_cpu_ms_per_req"])}
              for k in REQUESTS}
    return {"backend": backend, "checkpoints": checkpoints, "growth": growth}


async def run(cfg: ScaleConfig) -> dict[str, Any]:
    backends = list(cfg.backends)
    skipped = {}
    if "postgres" in backends:
        from bench.common import pg_available

        ok, why = await pg_available()
        if not ok:
            backends.remove("postgres")
            skipped["postgres"] = why
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
            value = r["growth"][name]["p50"]
            targets.append({
                "name": f"Scale ({r['backend']}): {label} latency at {largest:,} stored jobs "
                        f"≤ {TARGET} x at 0", "value": value, "limit": TARGET,
                "met": bool(value <= TARGET), "cpu_ratio": r["growth"][name]["net_cpu"]})
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
