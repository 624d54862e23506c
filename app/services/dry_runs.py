"""Dry runs: every layer of a job spec on a sample of its source, leaving nothing behind.

A dry run takes the checks a create does (the spec was validated into `JobParams`, the owner's
create rate is charged) and then runs the four stages with the configured engine, exactly as the
executor would (the same kernel, sandbox and limits), but:

* LandingToODS reads only the first `sample_rows` source rows, in file-name then line order
  (`StageRequest.sample_rows`);
* the stages write under a temporary folder (never the warehouse) with a throw-away job id, and
  the folder is removed whatever happens;
* nothing is written to the database: no job, no event, no executor task.

The engine runs in a worker thread, never on the event loop, and at most `max_running` dry runs
run at once in a process; one more is refused with 429 rather than queued. A refusal of the
sandbox or an SQL error is a `DryRunRefused` naming the layer and the field of the spec.

`DryRunService.dry_run(owner, params, parameters, sample_rows)` is the one entry point: a job's
create passes no parameters; a pipeline run passes its typed `$name` values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.domain.errors import DomainError, TooManyRequests
from app.domain.owners import landing_scope
from app.domain.parameters import TypedValue, bind_values
from app.domain.params import JobParams
from app.domain.states import STAGES, Stage
from app.executor.engine.base import CancelToken, Engine, StageFailed, StageRequest
from app.store import layers

log = logging.getLogger("strata.dry_runs")

SAMPLE_ROWS_DEFAULT = 1000
SAMPLE_ROWS_MAX = 10_000
SAMPLE_SIZE = 20
"""Rows of each layer shown in a dry run's answer."""

ChargeRate = Callable[[str], Awaitable[None]]


class DryRunRefused(DomainError):
    """A stage of the dry run failed: `field` is where in the spec (`params.layers.dwd.sql`)."""

    def __init__(self, layer: str, field: str, message: str) -> None:
        super().__init__(f"dry run refused at layer {layer}: {message}")
        self.layer = layer
        self.field = field
        self.message = message


@dataclass(frozen=True)
class LayerPreview:
    """One layer as the dry run wrote it."""

    columns: list[dict[str, str]]
    """`[{"name", "type"}]`, types as DuckDB names them."""
    rows: int
    rejects: int
    deduped: int
    sample: list[dict[str, Any]]
    """The first `SAMPLE_SIZE` rows, in the layer's row order, as JSON values."""


@dataclass(frozen=True)
class DryRun:
    sample_rows: int
    layers: dict[str, LayerPreview]


@dataclass
class DryRunService:
    engine: Callable[[], Engine]
    """The configured engine (loaded on first use when the executor runs elsewhere)."""
    landing_dir: Path
    """The landing root; an owner reads its own folder under it, as its jobs do."""
    charge_rate: ChargeRate | None = None
    """Takes one create from the owner's rate (`JobService.charge_create_rate`), or raises 429."""
    scratch_dir: Path | None = None
    """Where the temporary folders go; None: the system's temporary directory."""
    memory_limit: str | None = None
    max_running: int = 2
    _running: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    async def dry_run(
        self,
        owner: str,
        params: JobParams,
        parameters: Mapping[str, TypedValue] | None = None,
        sample_rows: int = SAMPLE_ROWS_DEFAULT,
    ) -> DryRun:
        """Run every layer of `params` on the first `sample_rows` source rows; create nothing."""
        if not 1 <= sample_rows <= SAMPLE_ROWS_MAX:
            raise ValueError(f"sample_rows must be 1 to {SAMPLE_ROWS_MAX}, got {sample_rows}")
        self._refuse_if_busy()  # before charging the rate: a refused try costs nothing
        if self.charge_rate is not None:
            await self.charge_rate(owner)
        scope = landing_scope(owner)
        run = _Run(
            engine=self.engine(),
            params=params,
            landing_dir=self.landing_dir / scope if scope else self.landing_dir,
            scratch_dir=self.scratch_dir,
            parameters=bind_values(dict(parameters or {})),
            sample_rows=sample_rows,
            memory_limit=self.memory_limit,
        )
        self._enter()
        # the thread frees the slot when the engine is done, even if this request is cancelled
        work = asyncio.ensure_future(asyncio.to_thread(self._work, run))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            run.cancel.cancel()  # the client went away: stop the engine soon
            work.add_done_callback(_forget)
            raise

    def _refuse_if_busy(self) -> None:
        if self._running >= self.max_running:
            raise TooManyRequests(
                f"{self._running} dry runs are running, the limit is {self.max_running}; "
                "try again shortly", retry_after=1)

    def _enter(self) -> None:
        with self._lock:
            self._refuse_if_busy()
            self._running += 1

    def _leave(self) -> None:
        with self._lock:
            self._running -= 1

    def _work(self, run: _Run) -> DryRun:
        """The worker thread's whole job; the slot is freed only when the engine is done."""
        try:
            return run.execute()
        finally:
            self._leave()


@dataclass
class _Run:
    engine: Engine
    params: JobParams
    landing_dir: Path
    scratch_dir: Path | None
    parameters: dict[str, Any]
    sample_rows: int
    memory_limit: str | None
    cancel: CancelToken = field(default_factory=CancelToken)

    def execute(self) -> DryRun:
        job_id = f"dry-run-{uuid.uuid4().hex}"
        previews: dict[str, LayerPreview] = {}
        with tempfile.TemporaryDirectory(prefix="strata-dry-run-", dir=self.scratch_dir) as tmp:
            for stage in STAGES:
                request = StageRequest(
                    job_id=job_id, stage=stage, params=self.params,
                    landing_dir=self.landing_dir, warehouse_dir=Path(tmp), threads=1,
                    memory_limit=self.memory_limit, parameters=self.parameters,
                    sample_rows=self.sample_rows,
                )
                try:
                    result = self.engine.run_stage(request, lambda _progress: None, self.cancel)
                except StageFailed as exc:
                    raise refusal(self.params, stage, str(exc)) from None
                columns, sample = preview(Path(result.path))
                previews[stage.layer] = LayerPreview(
                    columns=columns, rows=result.rows, rejects=result.rejects,
                    deduped=result.deduped, sample=sample,
                )
        return DryRun(sample_rows=self.sample_rows, layers=previews)


def _forget(work: asyncio.Future[DryRun]) -> None:
    """Nobody awaits a cancelled request's run: take its outcome so it is not reported."""
    if not work.cancelled():
        work.exception()


def preview(path: Path) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """A layer's columns and first rows, valued as the data service values them (dates ISO,
    decimals as strings); an engine that wrote no file for an empty layer shows nothing."""
    try:
        columns = layers.layer_schema(path)
        rows = json.loads(b"".join(layers.iter_rows(path, "json", SAMPLE_SIZE)))
    except FileNotFoundError:
        return [], []
    assert isinstance(rows, list)
    return columns, rows


_CHECK = re.compile(r"^layer \w+ check ")
_DEDUPE = re.compile(r"^layer \w+ dedupe")


def refusal(params: JobParams, stage: Stage, message: str) -> DryRunRefused:
    """Name the part of the spec a stage's error is about."""
    layer = stage.layer
    if stage is Stage.LANDING_TO_ODS and message.startswith("source option"):
        return DryRunRefused(layer, "params.source.options", message)
    if stage is Stage.LANDING_TO_ODS and message.startswith(("source ", "the landing directory")):
        return DryRunRefused(layer, "params.source.path", message)
    if _CHECK.match(message):
        return DryRunRefused(layer, f"params.layers.{layer}.checks", message)
    if _DEDUPE.match(message):
        return DryRunRefused(layer, f"params.layers.{layer}.dedupe", message)
    spec = params.layers.get(layer)
    suffix = ".sql" if spec.sql else ""
    return DryRunRefused(layer, f"params.layers.{layer}{suffix}", message)
