"""Strata as real OS processes, for tests that kill them (kill -9) and start them again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from tests.waiting import wait_for


class StrataProcess:
    """`strata serve` or `strata executor` in a subprocess with its own environment and log."""

    def __init__(self, command: str, env: dict[str, str], port: int, log: Path) -> None:
        self.command = command
        self.env = env
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, flags: Sequence[str] | None = None, cwd: Path | None = None,
              **extra_env: str) -> StrataProcess:
        """Start it; `flags` replace the default `--port PORT` (`[]`: settings only)."""
        env = {k: v for k, v in os.environ.items()
               if k != "STRATA_CRASH_AT" and not (flags is not None and k.startswith("STRATA_"))}
        env.update(self.env)
        env.update(extra_env)
        flags = ["--port", str(self.port)] if flags is None else list(flags)
        args = [sys.executable, "-m", "app.cli", self.command, *flags]
        self._log_file = self.log.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log_file, cwd=cwd,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    async def ready(self, timeout: float = 30.0) -> None:
        async def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.command} exited {self.proc.returncode}: "
                                     f"{self.log.read_text()[-3000:]}")
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    return (await client.get(f"{self.url}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(healthy, timeout=timeout, interval=0.05, message=f"{self.command} ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, exactly like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    async def exited(self, timeout: float = 60.0) -> int:
        def done() -> bool:
            return self.proc is not None and self.proc.poll() is not None

        await wait_for(done, timeout=timeout, interval=0.02, message=f"{self.command} to exit")
        assert self.proc is not None
        self._close()
        return int(self.proc.returncode)

    def _close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def service_env(database_url: str, root: Path, **extra: Any) -> dict[str, str]:
    env = {
        "STRATA_DATABASE_URL": database_url,
        "STRATA_LANDING_DIR": str(root / "landing"),
        "STRATA_WAREHOUSE_DIR": str(root / "warehouse"),
        "STRATA_HOST": "127.0.0.1",
        "STRATA_WATCH_INTERVAL": "0.1",
        "STRATA_LEASE_SECONDS": "2",
        "STRATA_RETRY_BACKOFF_SECONDS": "0.1",
        "STRATA_TASK_CREATE_RATE": "1000",
        "STRATA_LOG_LEVEL": "WARNING",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env
