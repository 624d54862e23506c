"""What an engine is: a function from one stage request to one layer result.

Engines run in worker threads, never on the event loop. They report progress through a callback
and watch a cancel token; a cancelled or failed stage leaves no output behind.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.domain.params import JobParams, Source
from app.domain.states import Stage

LINEAGE_COLUMNS = ("_source_file", "_ingested_at", "_row_number")
"""What ODS adds to every landing row, whatever the engine."""

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class StageRequest:
    job_id: str
    stage: Stage
    params: JobParams
    landing_dir: Path
    """Resolved landing directory; the source glob is relative to it."""
    warehouse_dir: Path
    """Resolved warehouse root; this job's layers live in `warehouse_dir / job_id / <layer>`."""
    threads: int = 2
    memory_limit: str | None = None

    @property
    def job_dir(self) -> Path:
        return self.warehouse_dir / self.job_id

    def check_job_id(self) -> None:
        """The job id names a folder under the warehouse: refuse one that could leave it."""
        if not _JOB_ID.match(self.job_id) or self.job_id in (".", ".."):
            raise StageFailed(f"job id {self.job_id!r} cannot name a folder")


def source_matches(landing_dir: Path, source: Source) -> list[Path]:
    """The landing paths a stage reads: the claimed `files` of an incremental run (exactly
    those, never the glob), else what `source.path` matches. The caller confines them."""
    if source.files is not None:
        return [landing_dir / name for name in source.files]
    return list(landing_dir.glob(source.path))


@dataclass(frozen=True)
class Progress:
    percent: float
    processed: int
    total: int


@dataclass(frozen=True)
class LayerResult:
    layer: str
    rows: int
    path: str
    seconds: float
    rejects: int = 0
    deduped: int = 0
    rejects_path: str | None = None
    files: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StageFailed(Exception):
    """The stage cannot succeed with these inputs; the message is shown to the user."""


class SandboxViolation(StageFailed):
    """User SQL tried something it may not do (another file, COPY, ATTACH, SET, …)."""


class StageCancelled(Exception):
    """The stage was cancelled while it ran."""


class CancelToken:
    """Set from any thread; engines register how to interrupt their running work."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run `hook` on cancel (at once if already cancelled); returns an unregister function."""
        with self._lock:
            if not self._event.is_set():
                self._hooks.append(hook)

                def unregister() -> None:
                    with self._lock:
                        if hook in self._hooks:
                            self._hooks.remove(hook)

                return unregister
        hook()
        return lambda: None

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise StageCancelled("cancelled")


ProgressCallback = Callable[[Progress], None]


class Engine(Protocol):
    name: str

    def run_stage(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        """Run the stage to completion; raise StageFailed, SandboxViolation or StageCancelled."""
        ...
