"""Soak: many jobs, a service killed with SIGKILL at random moments and restarted, for minutes.

    python -m tests.soak --kills 50 --minutes 5 --backend postgres --rows 50000

At the end every job must have Succeeded with the same DS output as an uncrashed control run,
with exactly one completed executor task per stage (nothing lost, nothing run twice). A summary
is printed and written to --summary (default docs/soak.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.databases import PostgresDatabases, SqliteDatabases
from tests.orders_data import Dirt, generate, write_csv
from tests.outputs import same_rows
from tests.processes import StrataProcess, service_env
from tests.servers import free_port
from tests.waiting import wait_for

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "orders_job.json"
STOPPED = {"Succeeded", "Failed", "Cancelled"}


async def wait_ready(proc: StrataProcess) -> None:
    await proc.ready(timeout=60)


async def submit(api: httpx.AsyncClient, spec: dict[str, Any], key: str) -> str:
    for _ in range(50):
        try:
            response = await api.post("/v1/jobs", json=spec, headers={"Idempotency-Key": key})
            if response.status_code in (200, 201):
                return str(response.json()["job_id"])
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("could not submit")


def prepare_database(backend: str, root: Path) -> tuple[str, PostgresDatabases | None]:
    """A fresh migrated database (blocking: Alembic runs its own event loop)."""
    if backend == "postgres":
        pg = PostgresDatabases()
        pg.setup()
        return pg.new(), pg
    sqlite = SqliteDatabases(root)
    sqlite.setup()
    return sqlite.new(root), None


async def run(args: argparse.Namespace, url: str, root: Path) -> dict[str, Any]:
    files = write_csv(generate(args.rows, seed=9, dirt=Dirt().scaled(3)), root / "src", files=4)
    spec = json.loads(EXAMPLE.read_text())
    proc = StrataProcess("serve", service_env(url, root, STRATA_LEASE_SECONDS="2"), free_port(),
                         root / "serve.log")
    proc.start()
    await wait_ready(proc)
    api = httpx.AsyncClient(base_url=proc.url, timeout=30)
    for path in files:
        await api.put(f"/v1/landing/orders/{path.name}", content=path.read_bytes())
    control = await submit(api, spec, "control")

    async def control_done() -> bool:
        return (await api.get(f"/v1/jobs/{control}")).json()["status"] in STOPPED

    await wait_for(control_done, timeout=300, interval=0.2, message="control job")
    expected = (await api.get(f"/v1/jobs/{control}/output", params={"limit": 1_000_000})).json()

    rng = random.Random(args.seed)
    started = time.monotonic()
    kills, submitted = 0, []
    while kills < args.kills or time.monotonic() - started < args.minutes * 60:
        for _ in range(rng.randint(0, 2)):
            key = f"soak-{len(submitted)}"
            submitted.append(await submit(api, spec, key))
        await asyncio.sleep(rng.uniform(0.2, args.max_gap))
        proc.kill()
        kills += 1
        proc.start()
        await wait_ready(proc)
    deadline = time.monotonic() + 600
    pending = set(submitted)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            if (await api.get(f"/v1/jobs/{job_id}")).json()["status"] in STOPPED:
                pending.discard(job_id)
        await asyncio.sleep(0.5)

    statuses: Counter[str] = Counter()
    wrong_output = duplicated = 0
    for job_id in submitted:
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        statuses[job["status"]] += 1
        if job["status"] == "Succeeded":
            rows = (await api.get(f"/v1/jobs/{job_id}/output",
                                  params={"limit": 1_000_000})).json()
            if not same_rows(rows, expected):
                wrong_output += 1
                bad = root / f"wrong-{job_id}.json"
                bad.write_text(json.dumps({"job": job, "rows": rows, "expected": expected}))
        tasks = (await api.get("/executor/v1/tasks", params={"job_id": job_id})).json()["tasks"]
        completed = Counter(t["stage"] for t in tasks if t["status"] == "completed")
        duplicated += any(n > 1 for n in completed.values())
    await api.aclose()
    proc.stop()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "backend": args.backend, "rows_per_job": args.rows,
        "minutes": round((time.monotonic() - started) / 60, 1), "kills": kills,
        "jobs": len(submitted), "statuses": dict(statuses), "lost": len(pending)
        + sum(n for s, n in statuses.items() if s != "Succeeded"),
        "wrong_output": wrong_output, "duplicated_stage_runs": duplicated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--max-gap", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--summary", type=Path, default=Path("docs/soak.md"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strata-soak-"))
    url, pg = prepare_database(args.backend, root)
    try:
        result = asyncio.run(run(args, url, root))
    finally:
        if pg is not None:
            pg.teardown()
    print(json.dumps(result, indent=2))
    ok = result["lost"] == 0 and result["wrong_output"] == 0 and result[
        "duplicated_stage_runs"] == 0
    lines = [
        "# Soak results", "",
        "`make soak` kills the service with SIGKILL at random moments while jobs run, restarts",
        "it, and checks every job at the end (see `tests/soak.py`).", "",
        f"Last run: {result['date']}, `python -m tests.soak --kills {args.kills} "
        f"--minutes {args.minutes} --rows {args.rows} --backend {args.backend}`", "",
        "| measure | value |", "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in result.items() if k != "date"],
        "", f"Verdict: {'PASS' if ok else 'FAIL'}", "",
    ]
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text("\n".join(lines))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
