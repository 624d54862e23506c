"""The stage every engine runs, written once: an engine supplies only what differs.

`StageEngine.run_stage` is the whole life of one stage, the same on DuckDB and Spark:

1. refuse a cancelled stage, a job id that cannot name a folder, and (`_compile`, the engine's
   own SQL checks) bad user SQL, all before any file is touched;
2. find the inputs (`inputs`: the landing glob or the previous layer's Parquet files); a dry run
   (`StageRequest.sample_rows`) keeps only the first N landing rows in file-name then line order,
   and the engine's landing relation holds only those (`StageContext.sample_rows`);
3. in a scratch folder (`layout.work_dir`), `_execute` writes `out/` and, with checks, `rejects/`
   and returns the counts; rows + rejects + deduped must equal the rows after sql;
4. `publish` swaps the new folders into place atomically; the scratch folder goes whatever
   happened, so a failed or cancelled stage leaves the previous layer and nothing else;
5. progress says 100 % once, with exact counts, and the stage's `LayerResult` is returned.

An engine subclasses `StageEngine` and implements `_compile`, `_execute` and `_name_parts`.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from app.domain import layout
from app.domain.params import Layer
from app.domain.states import Stage
from app.executor.engine.base import (
    LINEAGE_COLUMNS,
    CancelToken,
    LayerResult,
    ProgressCallback,
    StageFailed,
    StageRequest,
)
from app.executor.engine.inputs import (
    StageInputs,
    landing_inputs,
    layer_inputs,
    sample_inputs,
)
from app.executor.engine.progress import Reporter
from app.executor.engine.publish import publish_stage

INTERNAL_PREFIX = "__strata"
"""Names the engines use for their own columns, views and tables; refused in user output."""
REJECT_REASON = "_reject_reason"


@dataclass(frozen=True)
class StageContext:
    """Names and folders of one running stage (every warehouse path comes from `layout`)."""

    request: StageRequest
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def stage(self) -> Stage:
        return Stage(self.request.stage)

    @property
    def layer(self) -> str:
        return self.stage.layer

    @property
    def input_layer(self) -> str:
        return self.stage.input_layer

    @property
    def spec(self) -> Layer:
        return self.request.params.layers.get(self.layer)

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self.request.parameters

    @property
    def sample_rows(self) -> int | None:
        """A dry run's cut of the landing rows (file-name then line order); None: every row."""
        if self.stage is not Stage.LANDING_TO_ODS or self.request.sample_rows is None:
            return None
        if self.request.sample_rows < 1:
            raise StageFailed("sample_rows must be at least 1")
        return self.request.sample_rows

    @property
    def label(self) -> str:
        """How an error of the layer's SQL names it."""
        return f"layer {self.layer}" + (" sql" if self.spec.sql else "")

    @cached_property
    def landing_dir(self) -> Path:
        return self.request.landing_dir.resolve()

    @cached_property
    def warehouse_dir(self) -> Path:
        return self.request.warehouse_dir.resolve()

    @property
    def job_dir(self) -> Path:
        return layout.job_dir(self.warehouse_dir, self.request.job_id)

    @property
    def layer_dir(self) -> Path:
        return layout.layer_dir(self.warehouse_dir, self.request.job_id, self.layer)

    @property
    def rejects_dir(self) -> Path:
        return layout.rejects_dir(self.warehouse_dir, self.request.job_id, self.layer)

    @property
    def work_dir(self) -> Path:
        return layout.work_dir(self.warehouse_dir, self.request.job_id, self.layer, self.token)

    @property
    def out_dir(self) -> Path:
        return self.work_dir / "out"

    @property
    def rejects_out(self) -> Path:
        return self.work_dir / "rejects"

    @cached_property
    def replacements(self) -> list[tuple[str, str]]:
        """The service's directories as a message may show them (relative names)."""
        return [
            (str(self.landing_dir) + "/", "landing/"),
            (str(self.landing_dir), "landing"),
            (str(self.warehouse_dir) + "/", "warehouse/"),
            (str(self.warehouse_dir), "warehouse"),
        ]

    def check_output_columns(self, columns: Sequence[str], *, with_checks: bool) -> None:
        """Refuse output column names the engines reserve for themselves."""
        for column in columns:
            if column.lower().startswith(INTERNAL_PREFIX):
                raise StageFailed(
                    f"layer {self.layer}: column name '{column}' is reserved "
                    f"(prefix {INTERNAL_PREFIX})"
                )
            if with_checks and column.lower() == REJECT_REASON:
                raise StageFailed(
                    f"layer {self.layer}: column name '{REJECT_REASON}' is reserved for rejects"
                )

    def check_lineage_columns(
        self, columns: Sequence[str], *, renamed_suffix: bool = False
    ) -> None:
        """ODS adds the lineage columns: a source column of the same name is an error.

        `renamed_suffix`: the engine renamed the clash (DuckDB writes `_row_number_1`).
        """
        lowered = [c.lower() for c in columns]
        for column in LINEAGE_COLUMNS:
            clash = lowered.count(column) > 1 or (
                renamed_suffix and any(re.fullmatch(f"{column}_\\d+", n) for n in lowered)
            )
            if clash:
                raise StageFailed(
                    f"source '{self.request.params.source.path}' has a column named '{column}', "
                    "which ODS adds as lineage; rename it"
                )



@dataclass(frozen=True)
class Plan:
    """A stage's user SQL, checked (and, for Spark, transpiled) before any I/O."""

    query: str | None
    """The layer's SELECT in the engine's dialect; None: the input as it is."""
    ordered: bool
    """The output is written in one file in the query's order (DS, a trailing ORDER BY)."""
    keys: tuple[str, ...] = ()
    """Dedupe keys; empty without dedupe."""
    order_by: str | None = None
    checks: tuple[tuple[str, str], ...] = ()
    """(name, boolean expression) per check, in order."""

    @property
    def dedupe(self) -> bool:
        return bool(self.keys)


@dataclass
class StageCounts:
    after_sql: int = 0
    rows: int = 0
    rejects: int = 0
    deduped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def verify(self, layer: str) -> None:
        kept = self.after_sql - self.deduped
        if self.rows + self.rejects != kept:  # pragma: no cover - an engine bug
            raise StageFailed(
                f"layer {layer}: rows were lost ({self.rows} + {self.rejects} != {kept})"
            )


@dataclass(frozen=True)
class StageWork:
    """What `_execute` is handed: the stage, its checked plan, inputs, progress and cancel."""

    ctx: StageContext
    plan: Plan
    inputs: StageInputs
    progress: Reporter
    cancel: CancelToken


class StageEngine(ABC):
    """An engine: `run_stage` is shared; subclasses adapt `_compile`, `_execute`, `_name_parts`."""

    name: str

    def run_stage(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        started = time.perf_counter()
        cancel.raise_if_cancelled()
        request.check_job_id()
        ctx = StageContext(request)
        plan = self._compile(ctx)  # refuse bad SQL before any I/O
        inputs = stage_inputs(ctx)
        progress = Reporter(report, inputs.total)
        ctx.job_dir.mkdir(parents=True, exist_ok=True)
        try:
            ctx.work_dir.mkdir()
            counts = self._execute(StageWork(ctx, plan, inputs, progress, cancel))
            cancel.raise_if_cancelled()
            counts.verify(ctx.layer)
            files = publish_stage(
                work=ctx.work_dir,
                out=ctx.out_dir,
                layer_dir=ctx.layer_dir,
                rejects_out=ctx.rejects_out if plan.checks else None,
                rejects_dir=ctx.rejects_dir,
                name_parts=self._name_parts,
            )
        finally:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
        processed = inputs.total if inputs.exact else counts.after_sql
        progress(100.0, processed=processed, total=processed, final=True)
        return LayerResult(
            layer=ctx.layer,
            rows=counts.rows,
            path=str(ctx.layer_dir),
            seconds=round(time.perf_counter() - started, 3),
            rejects=counts.rejects,
            deduped=counts.deduped,
            rejects_path=str(ctx.rejects_dir) if plan.checks else None,
            files=files,
            extra={"rows_after_sql": counts.after_sql, **counts.extra},
        )

    @abstractmethod
    def _compile(self, ctx: StageContext) -> Plan:
        """Check the layer's SQL, checks and dedupe against the sandbox; no I/O."""

    @abstractmethod
    def _execute(self, work: StageWork) -> StageCounts:
        """Write `work.ctx.out_dir` (and `work.ctx.rejects_out` when the plan has checks)."""

    @abstractmethod
    def _name_parts(self, folder: Path) -> int:
        """Leave only data files named `part-NNNNN.parquet` in `folder`; returns how many."""


def stage_inputs(ctx: StageContext) -> StageInputs:
    if ctx.stage is Stage.LANDING_TO_ODS:
        source = ctx.request.params.source
        inputs = landing_inputs(ctx.landing_dir, source, ctx.replacements)
        sample = ctx.sample_rows
        return inputs if sample is None else sample_inputs(inputs, sample, source)
    return layer_inputs(ctx.warehouse_dir, ctx.request.job_id, ctx.input_layer, ctx.replacements)
