"""The loop the watcher and the scheduler both run: passes until stopped, woken early on demand.

Each owner runs one named task that does a pass, then sleeps until `wake()` or its interval;
`stop()` lets the pass in progress finish. Written once so both stop the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class PassLoop:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = asyncio.Event()
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._task is None:
            self.stopping.clear()
            self._task = asyncio.create_task(run(), name=self.name)

    async def stop(self) -> None:
        self.stopping.set()
        self._woken.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._woken.set()

    def begin_pass(self) -> None:
        """A pass starts: wake-ups from now on ask for the next one."""
        self._woken.clear()

    async def sleep(self, seconds: float) -> bool:
        """Wait for a wake-up or `seconds`; True when woken, False when the time ran out."""
        try:
            await asyncio.wait_for(self._woken.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
