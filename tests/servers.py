"""Serve an ASGI app over real HTTP inside the test's event loop, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serve_app(
    app: Any, *, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 10.0,
    shutdown_timeout: int = 10,
) -> AsyncIterator[str]:
    """`async with serve_app(app) as base_url:` — uvicorn on a free port, lifespan on.

    Waits until the server has started (its lifespan startup included), yields
    `http://127.0.0.1:PORT`, and shuts it down — lifespan shutdown included — on exit.
    """
    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="warning",
                            ws="none", timeout_graceful_shutdown=shutdown_timeout)
    server = uvicorn.Server(config)

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits on a failed startup; keep it in this task
            raise RuntimeError(f"uvicorn could not start on {host}:{port} (exit {exc.code})") \
                from None

    task = asyncio.create_task(run(), name=f"uvicorn-{port}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + startup_timeout
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it stopped
                raise RuntimeError("uvicorn stopped before it started")
            if loop.time() > deadline:
                raise TimeoutError(f"uvicorn did not start within {startup_timeout}s")
            await asyncio.sleep(0.005)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=shutdown_timeout + 5)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
