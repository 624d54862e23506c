"""The Spark engine: the same stages, layout and results as the DuckDB engine, past one machine.

`STRATA_ENGINE=spark` runs every stage on a SparkSession instead of an in-process DuckDB; the job
spec and the API do not change. Layer SQL, check expressions and dedupe `order_by` stay in the
DuckDB dialect: `spark_sql` holds them to the DuckDB engine's sandbox rule, then transpiles them
with sqlglot; a run parameter `$name` becomes Spark's named marker `:name`, bound as a typed value
through `spark.sql(text, args=...)`. The stage's life (inputs, scratch folder, counts, publishing)
is the shared `kernel.StageEngine`; this module is its Spark adapter. One stage:

1. input: the landing files as `landing` (ODS; with the lineage columns `_source_file`, the path
   relative to the landing directory, `_ingested_at`, one UTC TIMESTAMP per run, and
   `_row_number`, 1-based in each file's line order) or the previous layer's Parquet files;
2. the layer's `sql`, then `dedupe` (the first row per key in `order_by` order, counted as
   `deduped`), then `checks` (a row passes when the expression is TRUE, NULL fails; the first
   failing check names `_reject_reason`); rows + rejects + deduped = rows after sql, checked;
3. Parquet (zstd) into `<job>/.tmp-<layer>-<uuid>/out` and `rejects`, files renamed to
   `part-NNNNN.parquet`, then swapped atomically into `<job>/<layer>/` and
   `<job>/<layer>_rejects/` (`publish`). A re-run replaces; a failed or cancelled stage leaves
   nothing behind. A layer whose SQL ends with ORDER BY (and DS always) is written as one file in
   that order.

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
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from app.domain.params import Source
from app.executor.engine.base import CancelToken, StageCancelled, StageFailed
from app.executor.engine.inputs import StageInputs, parquet_rows
from app.executor.engine.kernel import (
    REJECT_REASON,
    Plan,
    StageContext,
    StageCounts,
    StageEngine,
    StageWork,
)
from app.executor.engine.progress import BandPoller, Reporter
from app.executor.engine.publish import part_name

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
_ROW_NUMBER = "__strata_rn"
_SEQUENCE = "__strata_seq"
_ID_BITS = 33  # monotonically_increasing_id() = partition index << 33 | position in partition

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


class SparkEngine(StageEngine):
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

    # -- one stage (the kernel's adapters) ---------------------------------------------------

    def _compile(self, ctx: StageContext) -> Plan:
        return _compile(ctx, _Names.of(ctx))

    def _execute(self, work: StageWork) -> StageCounts:
        ctx, plan = work.ctx, work.plan
        spark = self.session()
        names = _Names.of(ctx)
        with self._tracked(spark, ctx, names, work.progress, work.cancel) as watcher:
            observed = self._actions(spark, work, names, watcher)
        work.cancel.raise_if_cancelled()
        rows = parquet_rows(sorted(ctx.out_dir.glob("part-*.parquet")), ctx.replacements)
        rejects = (
            parquet_rows(sorted(ctx.rejects_out.glob("part-*.parquet")), ctx.replacements)
            if plan.checks
            else 0
        )
        after_sql, kept = observed if observed else (rows, rows)
        return StageCounts(
            after_sql=after_sql,
            rows=rows,
            rejects=rejects,
            deduped=after_sql - kept,
            extra={"engine": self.name},
        )

    def _name_parts(self, folder: Path) -> int:
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
            item.rename(folder / part_name(index))
        return len(parts)

    def _actions(
        self, spark: Any, work: StageWork, names: _Names, watcher: _ProgressWatcher
    ) -> tuple[int, int] | None:
        """Write the layer (and rejects); (rows after sql, rows kept by dedupe) when staged."""
        from pyspark.sql import functions as F

        ctx, plan, inputs, cancel = work.ctx, work.plan, work.inputs, work.cancel
        args = dict(ctx.parameters) or None
        source_spec = ctx.request.params.source
        views: list[str] = []
        try:
            if inputs.names:
                watcher.band(0.0, 30.0)  # the lineage pass reads every landing file once
                source = _read_landing(spark, source_spec, inputs)
                source = _with_lineage(
                    spark, source, inputs, parse_all=bool(source_spec.options.get("ignore_errors"))
                )
                ctx.check_lineage_columns(source.columns)
                if ctx.sample_rows is not None:  # a dry run: the first N in name/line order
                    source = source.orderBy("_source_file", "_row_number").limit(ctx.sample_rows)
                start, width = 30.0, 70.0
            else:
                source = spark.read.parquet(*(str(p) for p in inputs.files))
                start, width = 0.0, 100.0
            cancel.raise_if_cancelled()
            source.createOrReplaceTempView(names.input_view)
            views.append(names.input_view)
            frame = spark.sql(plan.query, args=args) if plan.query else source
            ctx.check_output_columns(frame.columns, with_checks=bool(plan.checks))
            if not (plan.dedupe or plan.checks):
                watcher.band(start, width)
                _write(frame, ctx.out_dir, single=plan.ordered)
                return None

            # dedupe rank and reject reason of every row after sql, counted on the way through
            # the first write (recomputing for the rejects is cheaper than caching every row)
            if plan.keys and not plan.order_by:
                frame = frame.withColumn(_SEQUENCE, F.monotonically_increasing_id())
            frame.createOrReplaceTempView(names.stage_view)
            views.append(names.stage_view)
            staged = spark.sql(_staging_sql(names.stage_view, plan), args=args).drop(_SEQUENCE)
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
            _write(passed, ctx.out_dir, single=plan.ordered)
            counts = _observed_counts(observation, plan)
            if plan.checks:
                cancel.raise_if_cancelled()
                watcher.band(start + width * 0.8, width * 0.2)
                _write(
                    kept.where(F.col(REJECT_REASON).isNotNull()),
                    ctx.rejects_out,
                    single=plan.ordered,
                )
            return counts
        finally:
            for view in views:
                with suppress(Exception):
                    spark.catalog.dropTempView(view)

    # -- progress and cancel --------------------------------------------------------------

    @contextmanager
    def _tracked(
        self,
        spark: Any,
        ctx: StageContext,
        stage: _Names,
        progress: Reporter,
        cancel: CancelToken,
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
            context.setJobGroup(stage.group, f"strata {ctx.layer}", interruptOnCancel=True)
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
            raise _translate(err, ctx, stage) from None
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


def _compile(ctx: StageContext, names: _Names) -> Plan:
    try:
        from app.executor.engine.spark_sql import UserSql, ends_with_order_by
    except ImportError:  # pragma: no cover - depends on the installation
        raise StageFailed(
            "the Spark engine needs sqlglot: install Strata with the 'spark' extra"
        ) from None
    spec = ctx.spec
    user = UserSql(ctx.layer, ctx.input_layer, names.input_view, frozenset(ctx.parameters))
    query = user.query(spec.sql) if spec.sql and spec.sql.strip() else None
    keys: tuple[str, ...] = ()
    order_by = None
    if spec.dedupe is not None:
        keys = tuple(spec.dedupe.keys)
        if spec.dedupe.order_by and spec.dedupe.order_by.strip():
            order_by = user.order_by(spec.dedupe.order_by)
    checks = tuple((check.name, user.predicate(check.expr, check.name)) for check in spec.checks)
    ordered = ctx.layer == "ds" or (query is not None and ends_with_order_by(query))
    return Plan(query=query, ordered=ordered, keys=keys, order_by=order_by, checks=checks)


def _staging_sql(view: str, plan: Plan) -> str:
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


def _observe(staged: Any, plan: Plan) -> tuple[Any, Any]:
    """Count the rows after sql (and the dedupe winners) as the first write streams them."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    observation = Observation(f"strata-{uuid.uuid4().hex[:12]}")
    metrics = [F.count(F.lit(1)).alias("after_sql")]
    if plan.keys:
        metrics.append(F.sum((F.col(_ROW_NUMBER) == 1).cast("long")).alias("kept"))
    return observation, staged.observe(observation, *metrics)


def _observed_counts(observation: Any, plan: Plan) -> tuple[int, int]:
    """(rows after sql, rows kept by dedupe)."""
    values = observation.get
    after_sql = int(values.get("after_sql") or 0)
    kept = int(values.get("kept") or 0) if plan.keys else after_sql
    return after_sql, kept


@dataclass(frozen=True)
class _Names:
    """Spark's names for one running stage: its temp views and its job group (or tag)."""

    input_view: str
    stage_view: str
    group: str

    @classmethod
    def of(cls, ctx: StageContext) -> _Names:
        token = ctx.token[:12]
        return cls(
            input_view=f"strata_{token}_{ctx.input_layer}",
            stage_view=f"strata_{token}_{ctx.layer}_stage",
            group=f"strata-{ctx.request.job_id}-{ctx.layer}-{token}",
        )


# -- progress ------------------------------------------------------------------------------------


class _ProgressWatcher(BandPoller):
    """Polls the stage's Spark jobs and maps the current action's progress onto its band.

    Within a band, each job started since the band began counts its share of completed tasks
    (a finished job counts as complete, whatever stages it skipped), and one job more than seen
    so far is assumed to come, so a band never looks finished before it is.
    """

    def __init__(
        self,
        poll: Callable[[], dict[Any, tuple[int, int, bool]]],
        progress: Reporter,
        cancel: CancelToken,
        interrupt: Callable[[], Any],
    ) -> None:
        super().__init__(progress, cancel, seconds=POLL_SECONDS, name="spark-progress")
        self._poll = poll
        self._interrupt_group = interrupt
        self._before: set[Any] = set()

    def _on_band(self) -> None:
        try:
            self._before = set(self._poll())
        except Exception:
            self._before = set()

    def _fraction(self) -> float | None:
        try:
            jobs = self._poll()
        except Exception:  # the tracker is best effort
            return None
        shares = [
            1.0 if finished else (done / total if total else 0.0)
            for key, (done, total, finished) in jobs.items()
            if key not in self._before
        ]
        # an action runs as several jobs (one per shuffle stage with adaptive execution), and
        # only the ones started so far are known: count one more
        return sum(shares) / (len(shares) + 1) if shares else None

    def _interrupt(self) -> None:
        # a job submitted just after the cancel hook ran would otherwise run on
        self._interrupt_group()


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


def _read_landing(spark: Any, source: Source, inputs: StageInputs) -> Any:
    """The landing files with the reader options mapped from DuckDB's names to Spark's."""
    options = source.options
    paths = [str(path) for path in inputs.files]
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
        order = _json_key_order(inputs.files[0])  # Spark sorts inferred fields by name
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


def _with_lineage(spark: Any, frame: Any, inputs: StageInputs, *, parse_all: bool) -> Any:
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
    names = {str(path): name for path, name in zip(inputs.files, inputs.names, strict=True)}
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


# -- output --------------------------------------------------------------------------------------


def _write(frame: Any, path: Path, *, single: bool) -> None:
    """Parquet into `path`; `single`: one file in the frame's order (coalesce keeps the order of
    a sorted frame's partitions)."""
    if single:
        frame = frame.coalesce(1)
    frame.write.mode("overwrite").option("compression", "zstd").parquet(str(path))


# -- errors --------------------------------------------------------------------------------------


def _translate(err: Exception, ctx: StageContext, names: _Names) -> StageFailed:
    """A Spark error as the user sees it: the first line, the engine's own names put back."""
    getter = getattr(err, "getMessage", None)
    text = ""
    if callable(getter):
        with suppress(Exception):
            text = str(getter() or "")
    text = (text or str(err)).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    for internal, public in (
        (names.input_view, ctx.input_layer),
        (names.stage_view, ctx.layer),
        *ctx.replacements,
    ):
        first = first.replace(internal, public)
    label = ctx.label
    return StageFailed(f"{label}: {first[:2000]}")
