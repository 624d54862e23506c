"""Benchmark 4, the API: GET /v1/jobs/{id} and POST /v1/jobs next to /healthz, 50 clients.

    python -m bench.api --backends sqlite postgres --runs 3 --duration 10

A real `strata serve` per backend (fresh database, embedded executor, production defaults, the
per-owner create limits lifted so that POSTs measure the create path and not the 429), 20 tiny jobs
run to Succeeded first (so a GET returns a full job: params, results, conditions). Then, from a
separate process — `wrk` (one thread, 50 connections) when it is installed, else `bench.loadgen`
(asyncio + httpx) — each endpoint in turn for `--duration` seconds at 50 concurrent connections,
the order rotating every run, after one unrecorded warm-up pass:

* `GET /healthz` (the trivial endpoint of the same app),
* `GET /v1/jobs/{id}` (a random one of the 20 jobs),
* `POST /v1/jobs` (the tiny job with `"suspend": true`, so the created jobs do not run and the
  executor stays idle; each POST creates a new job).

Reported per endpoint: requests/s, latency p50/p99, non-2xx answers, the service's CPU seconds per
request (utime+stime of the service process over the run — robust when the machine is shared), the
access log's bytes per request (it stays on, JSON, as in production), and the load average.
Target: the job GET's requests/s ≥ 0.35x /healthz's in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import request_cost
from bench.common import (
    NO_LIMITS,
    REPO,
    STOPPED,
    Databases,
    Service,
    bench_dir,
    land_tiny,
    loadavg,
    median,
    poll,
    ratio,
    reachable_backends,
    run_timed,
    running,
    service_env,
    tiny_job,
    tree_cpu,
)
from bench.profiles import Profile

ENDPOINTS = ("healthz", "get_job", "post_job")
TARGET = 0.35
ACCESS_LOG = {"STRATA_LOG_LEVEL": "INFO", "STRATA_LOG_FORMAT": "json"}
"""The job GET's requests/s as a share of /healthz's."""


@dataclass
class ApiConfig:
    backends: list[str] = field(default_factory=lambda: ["sqlite", "postgres"])
    runs: int = 3
    duration: float = 10.0
    warmup: float = 2.0
    concurrency: int = 50
    jobs: int = 20
    tool: str = "auto"
    """wrk, loadgen, or auto (wrk when installed)."""
    profile: bool = False
    """py-spy the service during each endpoint's last run (BENCH_DIR/profiles)."""
    cost_requests: int = 3000
    """Requests per layer of `bench.request_cost` (in-process CPU per layer)."""
    root: Path | None = None


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(match.group(1)) * _UNIT[match.group(2)] if match else math.nan


def parse_wrk(output: str) -> dict[str, Any]:
    out: dict[str, Any] = {"tool": "wrk"}
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    out["rps"] = float(match.group(1)) if match else math.nan
    match = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    out["requests"] = int(match.group(1)) if match else 0
    for pct, key in (("50", "p50_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", output, re.MULTILINE)
        out[key] = _ms(match.group(1)) if match else math.nan
    match = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", output)
    out["max_ms"] = _ms(match.group(1)) if match else math.nan
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      output)
    if match:
        errors += sum(int(g) for g in match.groups())
    out["errors"] = errors
    return out


def _lua(method: str, paths: list[str], body: str | None) -> str:
    quoted = ", ".join(json.dumps(p) for p in paths)
    lines = [f"local paths = {{{quoted}}}", f'wrk.method = "{method}"']
    if body is not None:
        lines += [f"wrk.body = {json.dumps(body)}",
                  'wrk.headers["Content-Type"] = "application/json"']
    lines += ["request = function()",
              "  return wrk.format(nil, paths[math.random(#paths)])",
              "end"]
    return "\n".join(lines) + "\n"


def load(tool: str, url: str, method: str, paths: list[str], body: str | None,
         concurrency: int, duration: float, workdir: Path) -> dict[str, Any]:
    """One load run from a separate process; the result as a dict (rps, p50_ms, p99_ms, …)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if tool == "wrk":
        script = workdir / "load.lua"
        script.write_text(_lua(method, paths, body))
        done = run_timed(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
                          "--latency", "-s", str(script), url], timeout=duration + 60)
        result = parse_wrk(done.stdout)
        result["client_cpu"] = done.cpu
        result["seconds"] = done.wall
        return result
    paths_file = workdir / "paths.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    cmd = [sys.executable, "-m", "bench.loadgen", "--url", url, "--paths-file", str(paths_file),
           "--method", method, "-c", str(concurrency), "-d", str(duration)]
    if body is not None:
        body_file = workdir / "body.json"
        body_file.write_text(body)
        cmd += ["--body-file", str(body_file)]
    done = run_timed(cmd, cwd=REPO, timeout=duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stdout[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def prepare_jobs(client: httpx.AsyncClient, n: int) -> list[str]:
    await land_tiny(client)
    ids = []
    for i in range(n):
        response = await client.post("/v1/jobs", json=tiny_job(f"api-{i}"))
        response.raise_for_status()
        ids.append(str(response.json()["job_id"]))

    async def all_done() -> bool:
        for job_id in ids:
            if (await client.get(f"/v1/jobs/{job_id}")).json()["status"] not in STOPPED:
                return False
        return True

    await poll(all_done, within=300, interval=0.2, what=f"{n} jobs to finish")
    return ids


async def run_backend(cfg: ApiConfig, backend: str, tool: str,
                      databases: Databases) -> dict[str, Any]:
    root = (cfg.root or bench_dir() / "api") / backend
    shutil.rmtree(root, ignore_errors=True)
    url = await asyncio.to_thread(databases.new, backend, root)
    # the JSON access log stays on, as in production: one line per request goes to serve.log
    service = Service(root, service_env(url, root, **NO_LIMITS, **ACCESS_LOG))
    body = json.dumps(tiny_job("api-post", suspend=True))
    runs: list[dict[str, Any]] = []
    async with running(service), httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        ids = await prepare_jobs(client, cfg.jobs)
        targets: dict[str, tuple[str, list[str], str | None]] = {
            "healthz": ("GET", ["/healthz"], None),
            "get_job": ("GET", [f"/v1/jobs/{i}" for i in ids], None),
            "post_job": ("POST", ["/v1/jobs"], body),
        }
        with tempfile.TemporaryDirectory(prefix="strata-bench-api-") as tmp:
            work = Path(tmp)
            if cfg.warmup > 0:
                for name in ENDPOINTS:
                    method, paths, data = targets[name]
                    await asyncio.to_thread(load, tool, service.url, method, paths, data,
                                            cfg.concurrency, cfg.warmup, work / name)
            for n in range(cfg.runs):
                order = list(ENDPOINTS[n % 3:] + ENDPOINTS[:n % 3])
                for name in order:
                    method, paths, data = targets[name]
                    load_before = loadavg()
                    out = bench_dir() / "profiles" / f"api-{backend}-{name}.txt"
                    profile = (Profile(service.pid, out, native=False, gil=True, rate=200)
                               if cfg.profile and n == cfg.runs - 1 else None)
                    log0 = service.log.stat().st_size
                    cpu0, t0 = tree_cpu(service.pid), time.perf_counter()
                    result = await asyncio.to_thread(load, tool, service.url, method, paths,
                                                     data, cfg.concurrency, cfg.duration,
                                                     work / name)
                    cpu = tree_cpu(service.pid) - cpu0
                    wall = time.perf_counter() - t0
                    if profile is not None:
                        await asyncio.to_thread(profile.stop)
                    requests = max(int(result.get("requests") or 0), 1)
                    log_bytes = service.log.stat().st_size - log0
                    result.update(endpoint=name, run=n, server_cpu=cpu,
                                  log_bytes_per_req=log_bytes / requests,
                                  server_cpu_share=cpu / wall if wall else math.nan,
                                  server_cpu_ms_per_req=cpu * 1000 / requests,
                                  load_before=load_before, load_after=loadavg())
                    runs.append(result)
        total_jobs = (await client.get("/v1/jobs", params={"limit": 1})).json()["total"]
    summary: dict[str, Any] = {}
    for name in ENDPOINTS:
        mine = [r for r in runs if r["endpoint"] == name]
        summary[name] = {key: median(r[key] for r in mine)
                         for key in ("rps", "p50_ms", "p99_ms", "max_ms", "server_cpu_ms_per_req",
                                     "server_cpu_share", "client_cpu", "log_bytes_per_req")}
        summary[name]["errors"] = sum(r["errors"] for r in mine)
        summary[name]["requests"] = sum(r["requests"] for r in mine)
    paired = []
    for n in range(cfg.runs):
        h = [r for r in runs if r["run"] == n and r["endpoint"] == "healthz"]
        g = [r for r in runs if r["run"] == n and r["endpoint"] == "get_job"]
        if h and g:
            paired.append(ratio(g[0]["rps"], h[0]["rps"]))
    ratios = {
        "get/healthz rps": ratio(summary["get_job"]["rps"], summary["healthz"]["rps"]),
        "get/healthz rps paired": median(paired),
        "healthz/get cpu per request": ratio(summary["healthz"]["server_cpu_ms_per_req"],
                                             summary["get_job"]["server_cpu_ms_per_req"]),
        "post/healthz rps": ratio(summary["post_job"]["rps"], summary["healthz"]["rps"]),
    }
    return {"backend": backend, "tool": tool, "runs": runs, "summary": summary,
            "ratios": ratios, "jobs_in_db_at_end": total_jobs}


async def run(cfg: ApiConfig) -> dict[str, Any]:
    tool = cfg.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "loadgen"
    backends, skipped = await reachable_backends(list(cfg.backends))
    databases = Databases((cfg.root or bench_dir() / "api") / "template")
    results = []
    try:
        for backend in backends:
            results.append(await run_backend(cfg, backend, tool, databases))
    finally:
        await asyncio.to_thread(databases.close)
    costs = await request_cost.run(cfg.cost_requests, tuple(backends)) if results else []
    targets = []
    for r in results:
        value = r["ratios"]["get/healthz rps"]
        targets.append({"name": f"API ({r['backend']}): GET /v1/jobs/{{id}} req/s ≥ "
                                f"{TARGET:g}x /healthz", "value": value, "limit": TARGET,
                        "met": bool(value >= TARGET),
                        "cpu_ratio": r["ratios"]["healthz/get cpu per request"]})
    return {"name": "api", "status": "ok" if results else "skipped", "tool": tool,
            "config": {"runs": cfg.runs, "duration": cfg.duration, "warmup": cfg.warmup,
                       "concurrency": cfg.concurrency, "jobs": cfg.jobs},
            "skipped_backends": skipped, "backends": results, "targets": targets,
            "request_cost": costs,
            **({} if results else {"reason": "; ".join(skipped.values())})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--tool", choices=["auto", "wrk", "loadgen"], default="auto")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    cfg = ApiConfig(backends=args.backends, runs=args.runs, duration=args.duration,
                    tool=args.tool, profile=args.profile)
    print(json.dumps(asyncio.run(run(cfg)), indent=2, default=str))


if __name__ == "__main__":
    main()
