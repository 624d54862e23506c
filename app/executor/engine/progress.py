"""Stage progress: one sink that only moves forward, and the thread that feeds it.

Each action of a stage (a query, a write, a lineage pass) owns a band of the stage's 0-100 %.
`BandPoller` asks the engine every few tenths of a second how far the running action is and
reports the matching point of its band; while the stage is cancelled it repeats the engine's
interrupt, so a cancel that lands between two actions is not lost. `Reporter` forwards only
progress that moves forward, below 100 % until the final report with exact counts.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from contextlib import suppress

from app.executor.engine.base import CancelToken, Progress, ProgressCallback

log = logging.getLogger(__name__)


class Reporter:
    """Forwards progress that moves forward, below 100 % until the final exact report.

    Callable from any thread; a failing sink never fails the stage.
    """

    def __init__(self, sink: ProgressCallback, total: int = 0) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._last = -1.0
        self.total = total
        """The input rows that `processed` is a share of."""

    def __call__(
        self,
        percent: float,
        *,
        processed: int | None = None,
        total: int | None = None,
        final: bool = False,
    ) -> None:
        if not final:
            percent = min(percent, 99.0)  # 100 % is said once, at the end, with exact counts
        with self._lock:
            if not final and percent <= self._last:
                return
            self._last = percent
            total = self.total if total is None else total
            if processed is None:
                processed = min(total, int(total * percent / 100.0))
            progress = Progress(
                percent=round(min(percent, 100.0), 2), processed=processed, total=total
            )
        try:
            self._sink(progress)
        except Exception:  # a broken progress sink must not fail the stage
            log.exception("progress callback failed")


class BandPoller(ABC):
    """A thread mapping the running action's own progress onto its band of the stage."""

    def __init__(
        self, progress: Reporter, cancel: CancelToken, *, seconds: float, name: str
    ) -> None:
        self.progress = progress
        self.cancel = cancel
        self.seconds = seconds
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._start = 0.0
        self._width = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def band(self, start: float, width: float) -> None:
        """The next action's 0-100 % maps to start … start + width; the band before is done."""
        self._on_band()
        with self._lock:
            self._report(self._start + self._width)
            self._start, self._width = start, width

    def finish_band(self) -> None:
        """The current action is done."""
        with self._lock:
            self._report(self._start + self._width)

    def _loop(self) -> None:
        while not self._stopped.wait(self.seconds):
            if not self._active():
                continue
            if self.cancel.cancelled:
                with suppress(Exception):  # cancel is racy: the work may have just ended
                    self._interrupt()
                continue
            fraction = self._fraction()
            if fraction is not None:
                with self._lock:
                    self._report(self._start + self._width * min(max(fraction, 0.0), 1.0))

    def _report(self, percent: float) -> None:
        if percent > 0:
            self.progress(percent)

    def _active(self) -> bool:
        """Whether an action runs now (only then is it polled or interrupted)."""
        return True

    def _on_band(self) -> None:  # noqa: B027 - a hook; most pollers need nothing here
        """Called as a new band begins, before it is set."""

    @abstractmethod
    def _fraction(self) -> float | None:
        """How far the running action is, 0 to 1; None when it cannot be told now."""

    @abstractmethod
    def _interrupt(self) -> None:
        """Stop the running action (the stage was cancelled)."""
