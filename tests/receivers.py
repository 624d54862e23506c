"""A webhook receiver over real loopback HTTP that answers what the test tells it to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.servers import serve_app

HANG = -1
"""An answer that never comes (until the test releases it)."""


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An ASGI app: records each POST and answers the next of `answers` (then `default`)."""

    answers: list[int] = field(default_factory=list)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_progress: int = 0
    most_at_once: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers, b"".join(chunks)))
        answer = self.answers.pop(0) if self.answers else self.default
        self.in_progress += 1
        self.most_at_once = max(self.most_at_once, self.in_progress)
        try:
            if answer == HANG:
                await self.release.wait()
                answer = 200
            elif 300 <= answer < 400:
                await send({"type": "http.response.start", "status": answer,
                            "headers": [(b"location", b"http://127.0.0.1:1/elsewhere")]})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.start", "status": answer, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.in_progress -= 1

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]


@asynccontextmanager
async def running_receiver(receiver: Receiver) -> AsyncIterator[str]:
    """`async with running_receiver(r) as url:` — the receiver's URL on 127.0.0.1."""
    async with serve_app(receiver, shutdown_timeout=1) as base_url:
        try:
            yield base_url + "/hook"
        finally:
            receiver.release.set()
