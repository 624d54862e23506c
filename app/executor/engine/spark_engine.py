"""The Spark engine: the same stages, layout and results as the DuckDB engine, past one machine.

`STRATA_ENGINE=spark` runs every stage on a SparkSession instead of an in-process DuckDB; the job
spec and the API do not change. Layer SQL, check expressions and dedupe `order_by` stay in the
DuckDB dialect: `spark_sql` holds them to the DuckDB engine's sandbox rule, then transpiles them
with sqlglot. One stage, as in `duckdb_engine`:

1. input: the landing files as `landing` (ODS; with the lineage columns `_source_file`, the path
   relative to the landing directory, `_ingested_at`, one UTC TIMESTAMP per run, and
   `_row_number`, 1-based in each file's line order) or the previous layer's Parquet files;
2. the layer's `sql`, then `dedupe` (the first row per key in `order_by` order, counted as
   `deduped`), then `checks` (a row passes when the expression is TRUE, NULL fails; the first
   failing check names `_reject_reason`); rows + rejects + deduped = rows after sql, checked;
3. Parquet (zstd) into `<job>/.tmp-<layer>-<uuid>/out` and `rejects`, files renamed to
   `part-NNNNN.parquet`, then moved to `<job>/<layer>/` and `<job>/<layer>_rejects/`. A re-run
   replaces; a failed or cancelled stage leaves nothing behind. A layer whose SQL ends with
   ORDER BY (and DS always) is written as one file in that order.

Spark specifics: every action of a stage runs under one job group (classic) or operation tag
(Spark Connect). A watcher thread turns the group's completed/total tasks into progress, and a
cancel interrupts the group. Spark reads the landing files through the driver's paths, so with a
cluster the landing and warehouse directories must be a filesystem mounted at the same path on the
driver and on every executor. pyspark is imported lazily; this module imports without it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from app.domain.params import Layer, Source, check_relative_path
from app.domain.states import Stage
from app.executor.engine.base import (
    LINEAGE_COLUMNS,
    CancelToken,
    LayerResult,
    Progress,
    ProgressCallback,
    StageCancelled,
    StageFailed,
    StageRequest,
    source_matches,
)

log = logging.getLogger(__name__)

REJECT_REASON = "_reject_reason"
POLL_SECONDS = 0.5
_INTERNAL_PREFIX = "__strata"
_ROW_NUMBER = "__strata_rn"
_SEQUENCE = "__strata_seq"
_ID_BITS = 33  # monotonically_increasing_id() = partition index << 33 | position in partition
_GLOB_CHARS = re.compile(r"[*?\[\]{}\\]")
_PREVIOUS_STAGE = {"ods": Stage.LANDING_TO_ODS, "dwd": Stage.ODS_TO_DWD, "dws": Stage.DWD_TO_DWS}

# Settings every session gets unless the engine's `conf` says otherwise. They make Spark read,
# cast and write like the DuckDB engine: UTC, ANSI casts (a bad CAST fails, TRY_CAST gives NULL,
# overflow fails), INT64 microsecond timestamps, zstd level 1, proleptic Gregorian dates.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "zstd",
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInWrite": "CORRECTED",
    "spark.hadoop.parquet.compression.codec.zstd.level": "1",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.ui.showConsoleProgress": "false",
}
# Extra defaults for a local master: stay on the loopback interface.
LOCAL_CONF: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


class SparkEngine:
    """Runs stages on Spark: `local[n]`, `spark://…`, `yarn`, `k8s://…` or Spark Connect `sc://…`.

    The SparkSession is created on first use and shared by every stage (stages running at once
    each have their own temp views and job group). Spark allows one SparkContext per process, so
    use one engine per process. `close()` stops the session.
    """

    name = "spark"

    def __init__(
        self,
        master: str = "local[2]",
        app_name: str = "strata",
        conf: Mapping[str, str] | None = None,
    ) -> None:
        self.master = master
        self.app_name = app_name
        self.conf = dict(conf or {})
        self._spark: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()  # Spark Connect: the progress of this thread's stage

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SparkEngine:
        """From `STRATA_SPARK_MASTER` (default `local[2]`) and `STRATA_SPARK_CONF`
        (comma-separated `key=value` Spark settings)."""
        env = os.environ if environ is None else environ
        conf = dict(
            item.strip().split("=", 1)
            for item in env.get("STRATA_SPARK_CONF", "").split(",")
            if "=" in item
        )
        return cls(master=env.get("STRATA_SPARK_MASTER") or "local[2]", conf=conf)

    @property
    def is_connect(self) -> bool:
        return self.master.startswith("sc://")

    # -- the session ----------------------------------------------------------------------

    def session(self) -> Any:
        """The engine's SparkSession, created on first use."""
        with self._lock:
            if self._spark is None:
                self._spark = self._create_session()
            return self._spark

    def close(self) -> None:
        """Stop the SparkSession (a later stage would start a new one)."""
        with self._lock:
            spark, self._spark = self._spark, None
        if spark is not None:
            spark.stop()

    def _create_session(self) -> Any:
        try:
            from pyspark.sql import SparkSession
        except ImportError:  # pragma: no cover - depends on the installation
            raise StageFailed(
                "the Spark engine needs pyspark: install Strata with the 'spark' extra"
            ) from None
        conf = dict(DEFAULT_CONF)
        if self.master.startswith("local"):
            conf.update(LOCAL_CONF)
        # Spark creates its (unused) catalog folder in the working directory unless told where
        conf["spark.sql.warehouse.dir"] = str(Path(tempfile.gettempdir()) / "strata-spark-catalog")
        conf.update(self.conf)
        builder = SparkSession.builder.appName(self.app_name)
        if self.is_connect:
            spark = builder.remote(self.master).getOrCreate()
            for key, value in conf.items():  # over Connect only runtime SQL settings apply
                if key.startswith("spark.sql.") and spark.conf.isModifiable(key):
                    spark.conf.set(key, value)
            spark.registerProgressHandler(self._on_connect_progress)  # type: ignore[arg-type]
            return spark
        for key, value in conf.items():
            builder = builder.config(key, value)
        if self.master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # read when the JVM starts
        spark = builder.master(self.master).getOrCreate()
        for key, value in conf.items():
            if key.startswith("spark.sql.") and spark.conf.isModifiable(key):
                spark.conf.set(key, value)  # also when getOrCreate found a running session
        context = spark.sparkContext
        context.setLogLevel(conf.get("strata.spark.log_level", "ERROR"))
        for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
            # pyspark logs every failed query with its JVM stack; the stage reports it instead
            logging.getLogger(name).setLevel(logging.CRITICAL)
        if "spark.sql.files.minPartitionNum" not in conf:
            # file splits must not depend on how many executors happen to be registered: the
            # lineage pass and the write pass of ODS must cut the landing files identically
            spark.conf.set(
                "spark.sql.files.minPartitionNum", str(max(2, context.defaultParallelism))
            )
        return spark

    # -- one stage ------------------------------------------------------------------------

    def run_stage(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        started = time.perf_counter()
        cancel.raise_if_cancelled()
        request.check_job_id()
        stage = _Stage(request)
        plan = _compile(request.params.layers.get(stage.layer), stage)  # before any I/O
        files = _landing_files(request) if stage.input_layer == "landing" else []
        parts = _layer_parts(stage) if stage.input_layer != "landing" else []
        spark = self.session()
        progress = _Reporter(report)
        stage.job_dir.mkdir(parents=True, exist_ok=True)
        try:
            stage.work_dir.mkdir()
            with self._tracked(spark, stage, progress, cancel) as watcher:
                counts, total = self._execute(spark, stage, plan, files, parts, watcher, cancel)
            cancel.raise_if_cancelled()
            rows = _parquet_rows(stage.out_dir)
            rejects = _parquet_rows(stage.rejects_out) if plan.checks else 0
            kept = counts.kept if counts else rows
            if rows + rejects != kept:  # pragma: no cover - an engine bug
                raise StageFailed(
                    f"layer {stage.layer}: rows were lost ({rows} + {rejects} != {kept})"
                )
            after_sql = counts.after_sql if counts else rows
            if plan.checks:
                _name_parts(stage.rejects_out)
                _publish(stage.rejects_out, stage.rejects_dir, stage.work_dir)
            else:
                shutil.rmtree(stage.rejects_dir, ignore_errors=True)
            written = _name_parts(stage.out_dir)
            _publish(stage.out_dir, stage.final_dir, stage.work_dir)
        finally:
            shutil.rmtree(stage.work_dir, ignore_errors=True)
        processed = total.rows if total.exact else after_sql
        progress.report(100.0, processed=processed, total=processed, final=True)
        return LayerResult(
            layer=stage.layer,
            rows=rows,
            path=str(stage.final_dir),
            seconds=round(time.perf_counter() - started, 3),
            rejects=rejects,
            deduped=after_sql - kept,
            rejects_path=str(stage.rejects_dir) if plan.checks else None,
            files=written,
            extra={"rows_after_sql": after_sql, "engine": self.name},
        )

    def _execute(
        self,
        spark: Any,
        stage: _Stage,
        plan: _Plan,
        files: list[_LandingFile],
        parts: list[Path],
        watcher: _ProgressWatcher,
        cancel: CancelToken,
    ) -> tuple[_Counts | None, _Total]:
        from pyspark.sql import functions as F

        views: list[str] = []
        try:
            if files:
                total = _Total(_estimate_lines(files, stage.request.params.source), exact=False)
                watcher.total = total.rows
                watcher.band(0.0, 30.0)  # the lineage pass reads every landing file once
                source = _read_landing(spark, stage.request.params.source, files)
                source = _with_lineage(
                    spark,
                    source,
                    files,
                    parse_all=bool(stage.request.params.source.options.get("ignore_errors")),
                )
                _check_lineage_names(stage, source.columns)
                bands = [(30.0, 70.0)]
            else:
                total = _Total(_parquet_rows_of(parts), exact=True)
                watcher.total = total.rows
                source = spark.read.parquet(*(str(p) for p in parts))
                bands = [(0.0, 100.0)]
            cancel.raise_if_cancelled()
            source.createOrReplaceTempView(stage.input_view)
            views.append(stage.input_view)
            frame = spark.sql(plan.query) if plan.query else source
            _check_output_columns(stage.layer, frame.columns, with_checks=bool(plan.checks))
            start, width = bands[0]
            if not plan.staged:
                watcher.band(start, width)
                _write(frame, stage.out_dir, single=plan.ordered)
                return None, total

            # dedupe rank and reject reason of every row after sql, counted on the way through
            # the first write (recomputing for the rejects is cheaper than caching every row)
            if plan.keys and not plan.order_by:
                frame = frame.withColumn(_SEQUENCE, F.monotonically_increasing_id())
            frame.createOrReplaceTempView(stage.stage_view)
            views.append(stage.stage_view)
            staged = spark.sql(_staging_sql(stage.stage_view, plan)).drop(_SEQUENCE)
            observation, staged = _observe(staged, plan)
            kept = staged.where(F.col(_ROW_NUMBER) == 1) if plan.keys else staged
            kept = kept.drop(_ROW_NUMBER)
            first = (start, width * 0.8) if plan.checks else (start, width)
            watcher.band(*first)
            passed = (
                kept.where(F.col(REJECT_REASON).isNull()).drop(REJECT_REASON)
                if plan.checks
                else kept
            )
            _write(passed, stage.out_dir, single=plan.ordered)
            counts = _observed_counts(observation, plan)
            if plan.checks:
                cancel.raise_if_cancelled()
                watcher.band(start + width * 0.8, width * 0.2)
                _write(
                    kept.where(F.col(REJECT_REASON).isNotNull()),
                    stage.rejects_out,
                    single=plan.ordered,
                )
            return counts, total
        finally:
            for view in views:
                with suppress(Exception):
                    spark.catalog.dropTempView(view)

    # -- progress and cancel --------------------------------------------------------------

    @contextmanager
    def _tracked(
        self, spark: Any, stage: _Stage, progress: _Reporter, cancel: CancelToken
    ) -> Iterator[_ProgressWatcher]:
        """Run the block's Spark actions under the stage's group; report progress; cancel it."""
        interrupt: Callable[[], Any]
        poll: Callable[[], dict[Any, tuple[int, int, bool]]]
        if self.is_connect:
            tracker = _ConnectProgress()
            self._local.tracker = tracker
            spark.addTag(stage.group)
            interrupt = lambda: spark.interruptTag(stage.group)  # noqa: E731
            poll = tracker.snapshot
        else:
            context = spark.sparkContext
            context.setJobGroup(stage.group, f"strata {stage.layer}", interruptOnCancel=True)
            interrupt = lambda: context.cancelJobGroup(stage.group)  # noqa: E731
            poll = lambda: _group_tasks(context, stage.group)  # noqa: E731
        unregister = cancel.on_cancel(interrupt)
        watcher = _ProgressWatcher(poll, progress, cancel, interrupt)
        watcher.start()
        try:
            yield watcher
        except (StageCancelled, StageFailed):
            raise
        except Exception as err:
            if cancel.cancelled:
                raise StageCancelled("cancelled") from None
            raise _translate(err, stage) from None
        finally:
            watcher.stop()
            unregister()
            if self.is_connect:
                self._local.tracker = None
                with suppress(Exception):
                    spark.removeTag(stage.group)
            else:
                with suppress(Exception):
                    spark.sparkContext._jsc.clearJobGroup()
        if cancel.cancelled:
            raise StageCancelled("cancelled")

    def _on_connect_progress(
        self, stages: Any, inflight_tasks: int, operation_id: str | None, done: bool
    ) -> None:
        # called in the thread that runs the operation, so a thread-local finds its stage
        tracker = getattr(self._local, "tracker", None)
        if tracker is not None:
            tracker.update(operation_id, stages, done)


# -- plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """A stage's user SQL, checked and transpiled before Spark is touched."""

    query: str | None
    ordered: bool
    keys: tuple[str, ...]
    order_by: str | None
    checks: tuple[tuple[str, str], ...]

    @property
    def staged(self) -> bool:
        return bool(self.keys or self.checks)


def _compile(spec: Layer, stage: _Stage) -> _Plan:
    try:
        from app.executor.engine.spark_sql import (
            compile_order_by,
            compile_predicate,
            compile_query,
            ends_with_order_by,
        )
    except ImportError:  # pragma: no cover - depends on the installation
        raise StageFailed(
            "the Spark engine needs sqlglot: install Strata with the 'spark' extra"
        ) from None
    names = {"layer": stage.layer, "input_layer": stage.input_layer, "relation": stage.input_view}
    query = compile_query(spec.sql, **names) if spec.sql and spec.sql.strip() else None
    keys: tuple[str, ...] = ()
    order_by = None
    if spec.dedupe is not None:
        keys = tuple(spec.dedupe.keys)
        if spec.dedupe.order_by and spec.dedupe.order_by.strip():
            order_by = compile_order_by(spec.dedupe.order_by, **names)
    checks = tuple(
        (check.name, compile_predicate(check.expr, name=check.name, **names))
        for check in spec.checks
    )
    ordered = stage.layer == "ds" or (query is not None and ends_with_order_by(query))
    return _Plan(query=query, ordered=ordered, keys=keys, order_by=order_by, checks=checks)


def _staging_sql(view: str, plan: _Plan) -> str:
    """Every row after sql with its dedupe rank and reject reason (our Spark SQL; user parts
    are the transpiled, sandbox-checked fragments)."""
    columns = ["*"]
    if plan.keys:
        partition = ", ".join(_quote(k) for k in plan.keys)
        order = plan.order_by or _quote(_SEQUENCE)
        columns.append(
            f"row_number() OVER (PARTITION BY {partition} ORDER BY {order}) AS {_ROW_NUMBER}"
        )
    if plan.checks:
        whens = " ".join(
            f"WHEN NOT coalesce({expr}, false) THEN '{name}'" for name, expr in plan.checks
        )
        columns.append(f"CASE {whens} END AS {REJECT_REASON}")
    return f"SELECT {', '.join(columns)} FROM {view}"


def _observe(staged: Any, plan: _Plan) -> tuple[Any, Any]:
    """Count the rows after sql (and the dedupe winners) as the first write streams them."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    observation = Observation(f"strata-{uuid.uuid4().hex[:12]}")
    metrics = [F.count(F.lit(1)).alias("after_sql")]
    if plan.keys:
        metrics.append(F.sum((F.col(_ROW_NUMBER) == 1).cast("long")).alias("kept"))
    return observation, staged.observe(observation, *metrics)


def _observed_counts(observation: Any, plan: _Plan) -> _Counts:
    values = observation.get
    after_sql = int(values.get("after_sql") or 0)
    kept = int(values.get("kept") or 0) if plan.keys else after_sql
    return _Counts(after_sql=after_sql, kept=kept)


def _check_output_columns(layer: str, columns: list[str], *, with_checks: bool) -> None:
    for column in columns:
        if column.lower().startswith(_INTERNAL_PREFIX):
            raise StageFailed(
                f"layer {layer}: column name '{column}' is reserved (prefix {_INTERNAL_PREFIX})"
            )
        if with_checks and column.lower() == REJECT_REASON:
            raise StageFailed(
                f"layer {layer}: column name '{REJECT_REASON}' is reserved for rejects"
            )


def _check_lineage_names(stage: _Stage, columns: list[str]) -> None:
    for column in LINEAGE_COLUMNS:
        if [c.lower() for c in columns].count(column) > 1:
            raise StageFailed(
                f"source '{stage.request.params.source.path}' has a column named '{column}', "
                "which ODS adds as lineage; rename it"
            )


# -- stage bookkeeping ---------------------------------------------------------------------------


@dataclass
class _Stage:
    """Names and folders of one running stage."""

    request: StageRequest
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def layer(self) -> str:
        return Stage(self.request.stage).layer

    @property
    def input_layer(self) -> str:
        return Stage(self.request.stage).input_layer

    @property
    def input_view(self) -> str:
        return f"strata_{self.token[:12]}_{self.input_layer}"

    @property
    def stage_view(self) -> str:
        return f"strata_{self.token[:12]}_{self.layer}_stage"

    @property
    def group(self) -> str:
        return f"strata-{self.request.job_id}-{self.layer}-{self.token[:12]}"

    @property
    def job_dir(self) -> Path:
        return self.request.warehouse_dir.resolve() / self.request.job_id

    @property
    def final_dir(self) -> Path:
        return self.job_dir / self.layer

    @property
    def rejects_dir(self) -> Path:
        return self.job_dir / f"{self.layer}_rejects"

    @property
    def work_dir(self) -> Path:
        """`.tmp-<layer>-<uuid>`, as the DuckDB engine names a running stage's folder."""
        return self.job_dir / f".tmp-{self.layer}-{self.token}"

    @property
    def out_dir(self) -> Path:
        return self.work_dir / "out"

    @property
    def rejects_out(self) -> Path:
        return self.work_dir / "rejects"


@dataclass(frozen=True)
class _Counts:
    after_sql: int
    kept: int


@dataclass(frozen=True)
class _Total:
    rows: int
    """Input rows: exact for Parquet, an estimate for CSV/JSONL (0 if unknown)."""
    exact: bool


@dataclass(frozen=True)
class _LandingFile:
    path: Path
    """Resolved absolute path."""
    name: str
    """Path relative to the landing directory: the `_source_file` lineage value."""


# -- progress ------------------------------------------------------------------------------------


class _Reporter:
    """Forwards progress that moves forward; a failing sink never fails the stage."""

    def __init__(self, sink: ProgressCallback) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._last = -1.0

    def report(self, percent: float, *, processed: int, total: int, final: bool = False) -> None:
        with self._lock:
            if not final and percent <= self._last:
                return
            self._last = percent
        try:
            self._sink(
                Progress(percent=round(min(percent, 100.0), 2), processed=processed, total=total)
            )
        except Exception:
            log.exception("progress callback failed")


class _ProgressWatcher:
    """Polls the stage's Spark jobs and maps the current action's progress onto its band.

    Each action of a stage (the lineage pass, materialising, each write) owns a band of the
    stage's 0-100 %. Within it, each job started since the band began counts its share of
    completed tasks (a finished job counts as complete, whatever stages it skipped), and one
    job more than seen so far is assumed to come, so a band never looks finished before it is.
    """

    def __init__(
        self,
        poll: Callable[[], dict[Any, tuple[int, int, bool]]],
        progress: _Reporter,
        cancel: CancelToken,
        interrupt: Callable[[], Any],
    ) -> None:
        self._poll = poll
        self._progress = progress
        self._cancel = cancel
        self._interrupt = interrupt
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="spark-progress", daemon=True)
        self._start = 0.0
        self._width = 0.0
        self._before: set[Any] = set()
        self.total = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def band(self, start: float, width: float) -> None:
        """The next action's 0-100 % maps to start … start + width; the last band is done."""
        try:
            before = set(self._poll())
        except Exception:
            before = set()
        with self._lock:
            self._publish(self._start + self._width)
            self._start, self._width, self._before = start, width, before

    def _loop(self) -> None:
        while not self._stopped.wait(POLL_SECONDS):
            if self._cancel.cancelled:
                # a job submitted just after the cancel hook ran would otherwise run on
                with suppress(Exception):
                    self._interrupt()
                continue
            try:
                jobs = self._poll()
            except Exception:  # the tracker is best effort
                continue
            shares = [
                1.0 if finished else (done / total if total else 0.0)
                for key, (done, total, finished) in jobs.items()
                if key not in self._before
            ]
            if shares:
                # an action runs as several jobs (one per shuffle stage with adaptive
                # execution), and only the ones started so far are known: count one more
                with self._lock:
                    self._publish(self._start + self._width * sum(shares) / (len(shares) + 1))

    def _publish(self, percent: float) -> None:
        if percent <= 0:
            return
        percent = min(percent, 99.0)
        self._progress.report(
            percent, processed=min(self.total, int(self.total * percent / 100)), total=self.total
        )


def _group_tasks(context: Any, group: str) -> dict[Any, tuple[int, int, bool]]:
    """Per job of the group: (completed tasks, tasks, finished) over its stages."""
    tracker = context.statusTracker()
    jobs: dict[Any, tuple[int, int, bool]] = {}
    for job_id in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job_id)
        if info is None:
            continue
        done = total = 0
        for stage_id in info.stageIds:
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                done += stage.numCompletedTasks
                total += stage.numTasks
        jobs[job_id] = (done, total, str(info.status) in ("SUCCEEDED", "FAILED"))
    return jobs


class _ConnectProgress:
    """Task counts of one stage's Spark Connect operations, fed by the progress handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._operations: dict[Any, tuple[int, int, bool]] = {}

    def update(self, operation_id: str | None, stages: Any, done: bool) -> None:
        stages = list(stages or ())
        with self._lock:
            self._operations[operation_id] = (
                sum(s.num_completed_tasks for s in stages),
                sum(s.num_tasks for s in stages),
                done,
            )

    def snapshot(self) -> dict[Any, tuple[int, int, bool]]:
        with self._lock:
            return dict(self._operations)


# -- inputs --------------------------------------------------------------------------------------


def _landing_files(request: StageRequest) -> list[_LandingFile]:
    """The source glob's files, confined to the landing directory, in relative-path order."""
    source = request.params.source
    landing = request.landing_dir.resolve()
    try:
        check_relative_path(source.path)
    except ValueError as exc:
        raise StageFailed(f"source path {source.path!r}: {exc}") from None
    if not landing.is_dir():
        raise StageFailed("the landing directory does not exist")
    try:
        matches = sorted(source_matches(landing, source),
                         key=lambda p: p.relative_to(landing).as_posix())
    except (ValueError, NotImplementedError) as exc:
        raise StageFailed(f"source path {source.path!r}: {exc}") from None
    files = []
    for match in matches:
        name = match.relative_to(landing).as_posix()
        try:
            resolved = match.resolve(strict=True)
        except (OSError, RuntimeError):
            raise StageFailed(f"source file '{name}' cannot be resolved") from None
        if not resolved.is_relative_to(landing):
            raise StageFailed(f"source file '{name}' points outside the landing directory; refused")
        if not resolved.is_file():
            continue
        if _GLOB_CHARS.search(str(resolved)):
            raise StageFailed(
                f"source file '{name}': file names with glob characters (*?[]{{}}\\) cannot be read"
            )
        files.append(_LandingFile(resolved, name))
    if not files:
        raise StageFailed(f"source path '{source.path}' matched no files in the landing directory")
    return files


def _layer_parts(stage: _Stage) -> list[Path]:
    folder = stage.job_dir / stage.input_layer
    previous = _PREVIOUS_STAGE[stage.input_layer]
    job_id = stage.request.job_id
    if not folder.is_dir():
        raise StageFailed(
            f"input layer '{stage.input_layer}' of job {job_id} is missing; "
            f"run {previous.value} first"
        )
    parts = sorted(p.resolve() for p in folder.glob("*.parquet"))
    if not parts:
        raise StageFailed(
            f"input layer '{stage.input_layer}' of job {job_id} has no Parquet "
            f"files; run {previous.value} again"
        )
    return parts


def _read_landing(spark: Any, source: Source, files: list[_LandingFile]) -> Any:
    """The landing files with the reader options mapped from DuckDB's names to Spark's."""
    options = source.options
    paths = [str(f.path) for f in files]
    if source.format == "parquet":
        merge = _bool(options.get("union_by_name", False))
        return spark.read.option("mergeSchema", merge).parquet(*paths)
    spark_options: dict[str, str] = {
        "mode": "DROPMALFORMED" if options.get("ignore_errors") else "PERMISSIVE",
    }
    for key, target in (("dateformat", "dateFormat"), ("timestampformat", "timestampFormat")):
        if key in options:
            spark_options[target] = _spark_time_format(str(options[key]))
    if source.format == "jsonl":
        frame = spark.read.options(**spark_options).json(paths)
        order = _json_key_order(files[0].path)  # Spark sorts inferred fields by name
        first = [c for c in order if c in frame.columns]
        return frame.select(
            *[_quote(c) for c in first], *[_quote(c) for c in frame.columns if c not in first]
        )
    if int(options.get("skip", 0) or 0) > 0:
        raise StageFailed("source option 'skip' is not supported by the Spark engine")
    quote = str(options.get("quote", '"'))
    spark_options.update(
        {
            "header": _bool(options.get("header", True)),
            "inferSchema": _bool(not options.get("all_varchar", False)),
            "sep": str(options.get("delimiter", ",")),
            "quote": quote,
            "escape": str(options.get("escape", quote)),  # DuckDB: the quote doubled, as RFC 4180
            "multiLine": "false",
        }
    )
    if "nullstr" in options:
        spark_options["nullValue"] = str(options["nullstr"])
    if "encoding" in options:
        spark_options["encoding"] = str(options["encoding"])
    return spark.read.options(**spark_options).csv(paths)


def _quote(name: str) -> str:
    """A column name as a Spark SQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def _bool(value: object) -> str:
    return "true" if value else "false"


def _spark_time_format(duckdb_format: str) -> str:
    """A DuckDB strftime format (`%Y-%m-%d`) as a Spark datetime pattern (`yyyy-MM-dd`)."""
    import sqlglot
    from sqlglot import exp

    literal = duckdb_format.replace("'", "''")
    try:
        spark_sql = sqlglot.transpile(
            f"SELECT strptime(x, '{literal}')", read="duckdb", write="spark"
        )[0]
        tree = sqlglot.parse_one(spark_sql, read="spark")
    except sqlglot.errors.SqlglotError:
        raise StageFailed(f"source date/time format {duckdb_format!r} cannot be used") from None
    strings = [node.this for node in tree.find_all(exp.Literal) if node.is_string]
    return str(strings[-1]) if strings else duckdb_format


def _json_key_order(path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            record = json.loads(handle.readline(1 << 20))
    except (OSError, ValueError):
        return []
    return [str(k) for k in record] if isinstance(record, dict) else []


def _with_lineage(spark: Any, frame: Any, files: list[_LandingFile], *, parse_all: bool) -> Any:
    """Add `_source_file`, `_ingested_at` and `_row_number` (1-based, in each file's order).

    A file split is read front to back, so `monotonically_increasing_id()` (partition index in
    the high bits, position in the partition in the low bits) orders the rows of a split. A first
    pass counts the rows of every (partition, file, split start); a broadcast join then turns a
    row's position into its number within its file. Both passes plan the same splits (same
    files, fixed split settings); a row whose split the first pass did not see fails the stage.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    low_bits = (1 << _ID_BITS) - 1
    tagged = frame.select(
        "*",
        F.col("_metadata.file_path").alias("__strata_file"),
        F.col("_metadata.file_block_start").alias("__strata_block"),
        F.monotonically_increasing_id().alias("__strata_id"),
    )
    counted = [
        F.shiftright("__strata_id", _ID_BITS).alias("__strata_part"),
        "__strata_file",
        "__strata_block",
        F.col("__strata_id").bitwiseAND(low_bits).alias("__strata_pos"),
    ]
    if parse_all and frame.columns:
        # a reader that drops malformed rows decides on the columns it parses: parse them all
        # here too, so that this pass sees exactly the rows the write pass will see
        counted.append(F.xxhash64(*[F.col(_quote(c)) for c in frame.columns]).alias("__strata_h"))
    splits = (
        tagged.select(*counted)
        .groupBy("__strata_part", "__strata_file", "__strata_block")
        .agg(
            F.min("__strata_pos").alias("first"),
            F.count(F.lit(1)).alias("n"),
            *([F.max("__strata_h")] if parse_all and frame.columns else []),
        )
        .collect()
    )
    names = {str(f.path): f.name for f in files}
    per_file: dict[str, list[Any]] = {}
    for split in splits:
        per_file.setdefault(split["__strata_file"], []).append(split)
    rows = []
    for spark_path, file_splits in per_file.items():
        name = names.get(_local_path(spark_path))
        if name is None:
            raise StageFailed(f"Spark read a file that is not a landing file: {spark_path}")
        before = 0
        for split in sorted(file_splits, key=lambda s: s["__strata_block"]):
            rows.append(
                (
                    int(split["__strata_part"]),
                    spark_path,
                    int(split["__strata_block"]),
                    before - int(split["first"]),
                    name,
                )
            )
            before += int(split["n"])
    offsets = spark.createDataFrame(
        rows,
        StructType(
            [
                StructField("__strata_part", LongType(), False),
                StructField("__strata_file", StringType(), False),
                StructField("__strata_block", LongType(), False),
                StructField("__strata_base", LongType(), False),
                StructField("_source_file", StringType(), False),
            ]
        ),
    )
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    joined = tagged.withColumn("__strata_part", F.shiftright("__strata_id", _ID_BITS)).join(
        F.broadcast(offsets), on=["__strata_part", "__strata_file", "__strata_block"], how="left"
    )
    base = F.when(
        F.col("__strata_base").isNull(),
        F.raise_error(F.lit("lineage: the file splits changed between passes; run it again")),
    ).otherwise(F.col("__strata_base"))
    return joined.select(
        *[F.col(_quote(c)) for c in frame.columns],
        F.col("_source_file"),
        F.expr(f"TIMESTAMP_NTZ '{now}'").alias("_ingested_at"),
        (F.col("__strata_id").bitwiseAND(low_bits) + base + F.lit(1))
        .cast("long")
        .alias("_row_number"),
    )


def _local_path(spark_path: str) -> str:
    parsed = urlparse(spark_path)
    return str(Path(unquote(parsed.path) if parsed.scheme else spark_path))


def _estimate_lines(files: list[_LandingFile], source: Source) -> int:
    """Rows of text files, estimated from their size and the line length of the first MiB."""
    if source.format == "parquet":
        return _parquet_rows_of([f.path for f in files])
    if any(f.path.suffix in (".gz", ".zst", ".zstd", ".bz2", ".xz") for f in files):
        return 0
    try:
        with files[0].path.open("rb") as handle:
            sample = handle.read(1 << 20)
        size = sum(f.path.stat().st_size for f in files)
    except OSError:
        return 0
    lines = sample.count(b"\n")
    if not lines:
        return len(files)
    header = 1 if source.format == "csv" and source.options.get("header", True) else 0
    return max(0, round(size * lines / len(sample) - header * len(files)))


# -- output --------------------------------------------------------------------------------------


def _write(frame: Any, path: Path, *, single: bool) -> None:
    """Parquet into `path`; `single`: one file in the frame's order (coalesce keeps the order of
    a sorted frame's partitions)."""
    if single:
        frame = frame.coalesce(1)
    frame.write.mode("overwrite").option("compression", "zstd").parquet(str(path))


def _name_parts(folder: Path) -> int:
    """Keep only the data files, renamed `part-NNNNN.parquet` in Spark's part order.

    Checksums and markers go, and so do empty parts (tasks that wrote no row), unless every
    part is empty: one file then keeps the layer's schema.
    """
    import pyarrow.parquet as pq

    parts = []
    for item in folder.iterdir():
        if item.name.startswith("part-") and item.name.endswith(".parquet"):
            parts.append(item)
        elif item.is_file():
            item.unlink()
    parts.sort()
    empty = [part for part in parts if pq.read_metadata(part).num_rows == 0]
    for part in empty[: len(empty) - 1] if len(empty) == len(parts) else empty:
        part.unlink()
        parts.remove(part)
    for index, item in enumerate(parts):
        item.rename(folder / f"part-{index:05d}.parquet")
    return len(parts)


def _parquet_rows(folder: Path) -> int:
    return _parquet_rows_of(sorted(folder.glob("part-*.parquet")))


def _parquet_rows_of(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    try:
        return sum(pq.read_metadata(f).num_rows for f in files)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise StageFailed(f"a Parquet file cannot be read: {exc}") from None


def _publish(src: Path, dest: Path, work: Path) -> None:
    """Move a finished folder into place; the folder it replaces is removed afterwards."""
    if dest.exists():
        old = work / f"old-{dest.name}"
        os.rename(dest, old)
    os.rename(src, dest)


# -- errors --------------------------------------------------------------------------------------


def _translate(err: Exception, stage: _Stage) -> StageFailed:
    """A Spark error as the user sees it: the first line, the engine's own names put back."""
    getter = getattr(err, "getMessage", None)
    text = ""
    if callable(getter):
        with suppress(Exception):
            text = str(getter() or "")
    text = (text or str(err)).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    for internal, public in (
        (stage.input_view, stage.input_layer),
        (stage.stage_view, stage.layer),
        (str(stage.job_dir), f"warehouse/{stage.request.job_id}"),
        (str(stage.request.landing_dir.resolve()), "landing"),
    ):
        first = first.replace(internal, public)
    label = f"layer {stage.layer}" + (
        " sql" if stage.request.params.layers.get(stage.layer).sql else ""
    )
    return StageFailed(f"{label}: {first[:2000]}")
