"""What a stage may take from the machine, whatever the engine: memory, disk, scratch folders.

* **Memory.** Each DuckDB stage gets a `memory_limit` (`stage_memory_limit`): the configured one,
  or 70 % of the machine's memory (the cgroup's limit in a container) divided by the stages that
  run at once, so concurrent heavy stages cannot push the process into the kernel's OOM killer.
  Past the limit DuckDB spills to the stage's own scratch folder (`.tmp-<layer>-…/spill`); what
  cannot spill fails the stage with reason `OutOfMemory`.
* **Disk.** The warehouse's filesystem keeps a free-space floor (`STRATA_MIN_FREE_DISK`, bytes or
  a share of the disk). A stage does not start below it, and a running stage that takes the disk
  below it is stopped: reason `DiskFull`.
* **Scratch folders.** A process killed mid-stage leaves its `.tmp-<layer>-…` folder behind.
  `sweep_work_dirs` removes the ones no live task owns when the executor starts, and a stage
  removes its own layer's leftovers when it is run again.

A failure with a `reason` is one another attempt would only repeat: the runner records the reason
in the task's `result` (`{"reason": "OutOfMemory"}`) and the watcher fails the job at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.domain.layout import TMP_PREFIX, is_safe_job_id, job_dir
from app.domain.states import Stage
from app.executor.engine.base import (
    CancelToken,
    Engine,
    LayerResult,
    ProgressCallback,
    StageCancelled,
    StageFailed,
    StageRequest,
)

log = logging.getLogger("strata.executor")

OUT_OF_MEMORY = "OutOfMemory"
DISK_FULL = "DiskFull"
ENGINE_UNAVAILABLE = "EngineUnavailable"
MEMORY_SHARE = 0.7
"""The share of the machine's memory all stages of one executor may use together."""
DISK_POLL_SECONDS = 0.5

_UNITS = {
    "": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_FAILURES = (  # what engines say when they run out, and the reason it is
    ("Out of Memory Error", OUT_OF_MEMORY),  # DuckDB's OutOfMemoryException
    ("OutOfMemoryError", OUT_OF_MEMORY),  # a JVM (Spark)
    ("No space left on device", DISK_FULL),
    ("Disk quota exceeded", DISK_FULL),
    ("the Spark engine needs", ENGINE_UNAVAILABLE),  # a package went missing after the start
)


class StageRefused(StageFailed):
    """A stage failure another attempt would only repeat; `reason` says which, for machines."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- sizes ------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """`'200MB'`, `'4GiB'`, `'1.5GB'` or `'1073741824'` as bytes (MB = 10^6, MiB = 2^20)."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size such as 500MB, 4GiB or 1073741824")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class FreeFloor:
    """Free space the warehouse's filesystem keeps: absolute, or a share of the disk."""

    size: int = 0
    share: float = 0.0

    def bytes_of(self, disk_total: int) -> int:
        return max(self.size, int(disk_total * self.share))

    def __str__(self) -> str:
        return f"{self.share:.0%} of the disk" if self.share else format_size(self.size)


def parse_free_floor(text: str) -> FreeFloor:
    """`'5%'` (of the disk), `'2GB'` or `'0'` (no floor)."""
    text = text.strip()
    if text.endswith("%"):
        share = float(text[:-1]) / 100
        if not 0 <= share < 1:
            raise ValueError(f"STRATA_MIN_FREE_DISK={text!r}: a share must be below 100%")
        return FreeFloor(share=share)
    return FreeFloor(size=parse_size(text))


# --- memory -----------------------------------------------------------------------------------


def total_memory() -> int | None:
    """The memory this process may use: the machine's, or its cgroup's limit when lower."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    limits = [physical]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            limits.append(int(value))
    return min(limits)


def stage_memory_limit(
    configured: str | None, workers: int, total: int | None = None
) -> str | None:
    """`configured` when set, else `MEMORY_SHARE` of `total` (the machine's) ÷ `workers`."""
    if configured:
        return configured
    total = total if total is not None else total_memory()
    if not total:
        return None
    share = int(total * MEMORY_SHARE / max(workers, 1))
    return f"{max(share // 1024**2, 64)}MiB"


# --- scratch folders --------------------------------------------------------------------------


def work_dir_layer(folder: Path) -> str | None:
    """The layer of a `.tmp-<layer>-<token>` folder; None for anything else."""
    if not folder.name.startswith(TMP_PREFIX):
        return None
    layer, dash, _ = folder.name[len(TMP_PREFIX):].partition("-")
    return layer if dash and layer else None


def sweep_work_dirs(warehouse: Path, *, job_id: str, layer: str) -> list[Path]:
    """Remove one job's scratch folders of `layer` (before that stage runs again)."""
    found = [p for p in _children(job_dir(warehouse, job_id)) if work_dir_layer(p) == layer]
    return _remove(found)


async def sweep_unowned_work_dirs(
    warehouse: Path, running_stages: Callable[[], Awaitable[Iterable[tuple[str, str]]]]
) -> list[Path]:
    """Remove every scratch folder of the warehouse that no running stage owns.

    `running_stages` gives the (job id, stage) of the tasks some runner holds now. The folders
    are listed before it is asked: a stage claimed after that question makes its folder after
    its claim, so it is never among the listed ones.
    """
    found = await asyncio.to_thread(
        lambda: [p for job in _children(warehouse) for p in _children(job) if work_dir_layer(p)])
    if not found:
        return []
    busy = {(job_id, Stage(stage).layer) for job_id, stage in await running_stages()}
    unowned = [p for p in found if (p.parent.name, work_dir_layer(p)) not in busy]
    return await asyncio.to_thread(_remove, unowned)


def _remove(folders: list[Path]) -> list[Path]:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    if folders:
        log.info("removed %d scratch folder(s) left by stages that did not end: %s",
                 len(folders), ", ".join(f"{p.parent.name}/{p.name}" for p in folders[:10]))
    return folders


def _children(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


# --- the guard --------------------------------------------------------------------------------

DiskUsage = Callable[[Path], Any]
"""`shutil.disk_usage`: a (total, used, free) named tuple for a path."""


class GuardedEngine:
    """An engine with the memory, disk and scratch rules of this module around every stage."""

    def __init__(
        self, engine: Engine, *, min_free: FreeFloor = FreeFloor(),
        disk_usage: DiskUsage = shutil.disk_usage, poll_seconds: float = DISK_POLL_SECONDS,
    ) -> None:
        self.engine = engine
        self.name = engine.name
        self.min_free = min_free
        self.disk_usage = disk_usage
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._running: Counter[tuple[str, str]] = Counter()

    def close(self) -> None:
        close: Callable[[], Any] | None = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def busy(self) -> set[tuple[str, str]]:
        """The (job id, layer) pairs with a stage running in this process now."""
        with self._lock:
            return {key for key, count in self._running.items() if count}

    def run_stage(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        key = (request.job_id, Stage(request.stage).layer)
        with self._lock:
            again = self._running[key] == 0  # not a second attempt still winding down here
            self._running[key] += 1
        try:
            if again and is_safe_job_id(key[0]):
                sweep_work_dirs(request.warehouse_dir, job_id=key[0], layer=key[1])
            self._check_disk(request.warehouse_dir)
            return self._run_watched(request, report, cancel)
        except StageFailed as exc:
            classified = _classified(exc)
            if classified is exc:
                raise
            raise classified from None
        except MemoryError:
            raise StageRefused(OUT_OF_MEMORY, f"layer {key[1]}: the stage ran out of memory "
                               "(STRATA_EXECUTOR_MEMORY_LIMIT)") from None
        finally:
            with self._lock:
                self._running[key] -= 1

    def _run_watched(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        """Run the engine with its own cancel token, tripped by `cancel` or a full disk."""
        inner = CancelToken()
        unregister = cancel.on_cancel(inner.cancel)
        stop = threading.Event()
        breach: list[str] = []

        def watch() -> None:
            while not stop.wait(self.poll_seconds):
                problem = self._disk_problem(request.warehouse_dir)
                if problem:
                    breach.append(problem)
                    inner.cancel()
                    return

        watcher = threading.Thread(target=watch, name="strata-disk-floor", daemon=True)
        watcher.start()
        try:
            return self.engine.run_stage(request, report, inner)
        except StageCancelled:
            if breach and not cancel.cancelled:
                raise StageRefused(DISK_FULL, breach[0]) from None
            raise
        finally:
            stop.set()
            watcher.join()
            unregister()

    def _check_disk(self, warehouse: Path) -> None:
        problem = self._disk_problem(warehouse)
        if problem:
            raise StageRefused(DISK_FULL, problem)

    def _disk_problem(self, warehouse: Path) -> str | None:
        if not self.min_free.size and not self.min_free.share:
            return None
        existing = next((p for p in (warehouse, *warehouse.parents) if p.exists()), warehouse)
        try:
            usage = self.disk_usage(existing)
        except OSError:
            return None
        floor = self.min_free.bytes_of(usage.total)
        if usage.free >= floor:
            return None
        return (f"the warehouse's disk has {format_size(usage.free)} free, below the floor of "
                f"{self.min_free} (STRATA_MIN_FREE_DISK); the stage stopped before filling it")


def _classified(exc: StageFailed) -> StageFailed:
    """The failure with a reason when it says the machine ran out; otherwise unchanged."""
    if getattr(exc, "reason", None):
        return exc
    message = str(exc)
    for marker, reason in _FAILURES:
        if marker in message:
            if reason == OUT_OF_MEMORY:  # DuckDB's advice (SET …) is not the user's to take
                message = (message.splitlines()[0] + " (each stage is held to its share of "
                           "memory, STRATA_EXECUTOR_MEMORY_LIMIT)")
            return StageRefused(reason, message)
    return exc
