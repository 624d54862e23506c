"""A small HTTP/1.1 load generator on asyncio streams, run as its own process so that it does not
share the service's event loop or interpreter lock (the fallback when `wrk` is not installed, and
the light probe of the throughput benchmark).

    python -m bench.loadgen --url http://127.0.0.1:8000 --path /healthz -c 50 -d 10
    python -m bench.loadgen --url … --paths-file ids.txt -c 50 -d 10       # one path per line
    python -m bench.loadgen --url … --path /v1/jobs --method POST --body-file job.json
    python -m bench.loadgen --url … --path /v1/jobs/ID -c 2 --rate 20 -d 600   # a probe

Closed loop: `-c` workers on `-c` keep-alive connections, each sending its next request when the
previous answer arrived; `--rate` caps the total requests/s (each worker then waits its turn),
which makes it a light probe. Runs `--warmup` seconds unrecorded, then `-d` seconds, or until
SIGTERM/SIGINT (the probe mode: started before a load, stopped after it). Prints one JSON object
(and writes it to `--out`): requests, errors, requests/s, latency p50/p90/p99/max in ms, the
client's own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    data = sorted(values)
    pos = q * (len(data) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class _Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: the client's hot loop is a write
    and two reads, so a single client process can outpace the service it measures (httpx's
    pool, measured here at 50 connections, could not: ~19 ms of client CPU per request)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "User-Agent: strata-bench-loadgen\r\nAccept: */*\r\n")
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                await self.reader.readexactly(size + 2)
        if headers.get("connection") == "close":
            await self.close()
        return status


async def generate(url: str, paths: list[str], *, method: str = "GET", body: bytes | None = None,
                   concurrency: int = 50, duration: float = 10.0, warmup: float = 0.0,
                   rate: float | None = None, stop: asyncio.Event | None = None,
                   max_requests: int = 10_000_000) -> dict[str, Any]:
    stop = stop or asyncio.Event()
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    sent = 0
    interval = concurrency / rate if rate else 0.0
    rng = random.Random(7)
    loop = asyncio.get_running_loop()
    connections = [_Connection(host, port) for _ in range(concurrency)]

    async def worker(conn: _Connection, until: float, record: bool) -> None:
        nonlocal errors, sent
        next_at = loop.time() + (rng.random() * interval if interval else 0.0)
        while loop.time() < until and not stop.is_set() and sent < max_requests:
            if interval:
                delay = next_at - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
                    if stop.is_set():
                        break
                next_at += interval
            path = paths[rng.randrange(len(paths))]
            started = time.perf_counter()
            try:
                code = await asyncio.wait_for(conn.request(method, path, body), timeout=30)
                key, ok = str(code), 200 <= code < 300
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError, ValueError, IndexError) as exc:
                key, ok = type(exc).__name__, False
                await conn.close()
            elapsed = time.perf_counter() - started
            if record:
                sent += 1
                latencies.append(elapsed * 1000)
                statuses[key] = statuses.get(key, 0) + 1
                errors += not ok

    try:
        if warmup > 0:
            end = loop.time() + warmup
            await asyncio.gather(*(worker(c, end, False) for c in connections))
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        end = loop.time() + duration
        await asyncio.gather(*(worker(c, end, True) for c in connections))
        elapsed = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        for conn in connections:
            await conn.close()
    return {
        "tool": "loadgen (asyncio streams)", "method": method, "concurrency": concurrency,
        "rate_limit": rate, "seconds": elapsed, "requests": len(latencies), "errors": errors,
        "statuses": statuses, "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": _quantile(latencies, 0.5), "p90_ms": _quantile(latencies, 0.9),
        "p99_ms": _quantile(latencies, 0.99), "max_ms": max(latencies, default=float("nan")),
        "client_cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
    }


async def _main(args: argparse.Namespace, paths: list[str],
                body: bytes | None) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await generate(args.url, paths, method=args.method, body=body,
                          concurrency=args.concurrency, duration=args.duration,
                          warmup=args.warmup, rate=args.rate, stop=stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", default="/healthz")
    parser.add_argument("--paths-file")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body-file")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.paths_file:
        paths = [p.strip() for p in Path(args.paths_file).read_text().splitlines() if p.strip()]
    else:
        paths = [args.path]
    body = Path(args.body_file).read_bytes() if args.body_file else None
    try:
        import uvloop

        result = uvloop.run(_main(args, paths, body))
    except ImportError:
        result = asyncio.run(_main(args, paths, body))
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
