"""Where the CPU of one `GET /v1/jobs/{id}` goes, layer by layer, next to `/healthz`.

    python -m bench.request_cost --requests 3000

The app is called in-process as an ASGI application (no socket, no uvicorn), one request at a
time, so each figure is CPU seconds per call (`time.process_time`) of one layer alone:

- `healthz`: the whole trivial request through the middleware stack and router;
- `job GET`: the whole job read;
- `same dependencies, no read`: a route with the job GET's dependencies (caller, service) that
  answers a constant — the framework's share;
- `JobService.read`: the database read alone, as the GET does it (`app.store.job_reader`: the
  bare driver, asyncpg's pool or a `sqlite3` connection on the loop);
- `pooled read`: the same read through the read pool and SQLAlchemy Core (one round trip), the
  path before the driver-level read and still the fallback;
- `document`: building and serialising the response from the stored row;
- `access log`: one uvicorn access-log record through the service's JSON handler, to a file;
- `driver floor`: the same SELECT straight on the driver (asyncpg prepared statement, or
  sqlite3), without SQLAlchemy or a pool — what no Python layer above it can go below.

Uvicorn's own HTTP work comes on top of every request alike (the API benchmark measures it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import Request
from fastapi.responses import Response

from app.api.deps import Caller, services_of
from app.api.schemas import job_response
from app.logs import JsonFormatter, RedactSecrets
from app.main import create_app
from app.settings import Settings
from bench.common import Databases, bench_dir, pg_available, tiny_job

Message = dict[str, Any]


async def call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI app, as uvicorn would hand it over."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())], "state": {}}
    sent = False
    status, chunks = 0, []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def cpu_ms(n: int, one: Callable[[int], Awaitable[Any]]) -> float:
    for i in range(min(200, n)):  # warm caches, pools and compiled statements
        await one(i)
    started = time.process_time()
    for i in range(n):
        await one(i)
    return (time.process_time() - started) * 1000 / n


async def access_log_ms(n: int, path: Path) -> float:
    """One access line as `strata serve` writes it (JSON, secrets redacted) to a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    access = logging.Logger("uvicorn.access")
    with path.open("w") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(RedactSecrets(["a-configured-secret"]))
        access.addHandler(handler)

        async def line(i: int) -> None:
            access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", "GET",
                        "/v1/jobs/0b9c6a8e-4b8a-4d0e-9d55-2a3c1f1e9a01", "1.1", 200)

        return await cpu_ms(n, line)


async def measure(backend: str, url: str, folder: Path, n: int) -> dict[str, Any]:
    settings = Settings(_env_file=None, database_url=url,  # type: ignore[call-arg]
                        landing_dir=folder / "landing", warehouse_dir=folder / "warehouse",
                        host="127.0.0.1", port=1)
    app = create_app(settings)

    async def same_dependencies(job_id: str, caller: Caller, request: Request) -> Response:
        services_of(request.app).jobs  # noqa: B018 - as the job GET finds its service
        return Response(b"{}", media_type="application/json")

    app.add_api_route("/bench/dependencies/{job_id}", same_dependencies, methods=["GET"])
    ids = []
    for i in range(20):
        status, body = await call(app, "POST", "/v1/jobs",
                                  json.dumps(tiny_job(f"cost-{i}", suspend=True)).encode())
        assert status == 201, body
        ids.append(json.loads(body)["job_id"])
    jobs = services_of(app).jobs
    rows = [await jobs.read(None, job_id) for job_id in ids]

    async def ok(path: str) -> None:
        status, body = await call(app, "GET", path)
        assert status == 200, body

    out: dict[str, Any] = {"backend": backend, "requests": n}
    out["healthz"] = await cpu_ms(n, lambda i: ok("/healthz"))
    out["job_get"] = await cpu_ms(n, lambda i: ok(f"/v1/jobs/{ids[i % 20]}"))
    out["dependencies"] = await cpu_ms(n, lambda i: ok(f"/bench/dependencies/{ids[i % 20]}"))
    out["service_read"] = await cpu_ms(n, lambda i: jobs.read(None, ids[i % 20]))
    pooled = replace(jobs, job_reader=None)
    out["pooled_read"] = await cpu_ms(n, lambda i: pooled.read(None, ids[i % 20]))

    async def document(i: int) -> None:
        job_response(rows[i % 20])

    out["document"] = await cpu_ms(n, document)
    out["access_log"] = await access_log_ms(n, folder / "access.log")
    sql = "SELECT * FROM jobs WHERE id = {}"
    if backend == "postgres":
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            statement = await conn.prepare(sql.format("$1"))
            out["driver_floor"] = await cpu_ms(n, lambda i: statement.fetchrow(ids[i % 20]))
        finally:
            await conn.close()
    else:
        plain = sqlite3.connect(url.split("///", 1)[1])
        try:
            async def fetch(i: int) -> None:
                plain.execute(sql.format("?"), (ids[i % 20],)).fetchone()

            out["driver_floor"] = await cpu_ms(n, fetch)
        finally:
            plain.close()
    for engine in (jobs.reader, jobs.sessions.kw["bind"]):
        await engine.dispose()
    if jobs.job_reader is not None:
        await jobs.job_reader.close()
    return out


async def run(n: int = 3000, backends: tuple[str, ...] = ("sqlite", "postgres")) -> list[Any]:
    root = bench_dir() / "request-cost"
    shutil.rmtree(root, ignore_errors=True)
    databases = Databases(root / "template")
    results = []
    try:
        pg_ok, _ = await pg_available()
        for backend in backends:
            if backend == "postgres" and not pg_ok:
                continue
            folder = root / backend
            url = await asyncio.to_thread(databases.new, backend, folder)
            results.append(await measure(backend, url, folder, n))
    finally:
        await asyncio.to_thread(databases.close)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    for result in asyncio.run(run(args.requests)):
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in result.items()}))


if __name__ == "__main__":
    main()
