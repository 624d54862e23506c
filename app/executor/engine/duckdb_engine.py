"""The DuckDB engine: one stage of one job, from its input to one Parquet layer (plus rejects).

Layout (all under `<warehouse_dir>/<job_id>/`):

    ods/ dwd/ dwd_rejects/ dws/ ds/        finished layers, Parquet (zstd level 1), files part-NNNNN
    .tmp-<layer>-<uuid>/out/ rejects/ spill/   one running stage: its output, rejects, DuckDB spill

The stage's life is the shared `kernel.StageEngine` (this module is its DuckDB adapter): a stage
writes into its own `.tmp-…` folder and, when everything succeeded, `publish` swaps `out/` (and
`rejects/`) into place atomically, so a reader never sees a half-written layer and a re-run
replaces, never appends. The `.tmp-…` folder is removed whatever happens, so a failed or cancelled
stage leaves nothing behind (the previous finished layer, if any, stays).

What a stage does (DESIGN.md, `params`):

* input: for LandingToODS the source files (the glob resolved in Python, confined to the landing
  directory after resolving symlinks, sorted by relative path) as the relation `landing`, with the
  lineage columns `_source_file` (the path relative to the landing directory, e.g.
  `orders/orders_0001.csv`), `_ingested_at` (one UTC TIMESTAMP per run) and `_row_number` (BIGINT,
  1-based row number within its file, in file order). CSV and JSONL files are read one by one with
  `row_number() OVER ()` (a streaming window, which DuckDB always runs in source order) and combined
  with `UNION ALL BY NAME`; Parquet files are read in one scan with the reader's virtual columns
  `file_index` and `file_row_number`. A dry run (`sample_rows`) cuts each file after its first N
  rows and keeps the first N of those by `_source_file`, then `_row_number`. Other stages read the
  previous layer's Parquet files under its name (`ods`, `dwd`, `dws`).
* `sql` (or `SELECT * FROM <input>`), then `dedupe`, then `checks`. Without dedupe and checks the
  result streams straight into the Parquet writer (the plain CSV ODS stage is read and written by
  pyarrow instead, `csv_arrow`). Otherwise it is materialised once in a temp table (in memory,
  spilling to `spill/`) and the winners of the dedupe are picked on narrow columns (the keys, the
  order_by columns and the row id): for an unordered layer with a grouped `first(rowid ORDER BY
  …)`, after which the kept rows are read once as Arrow, their check reason computed, and split
  by pyarrow writers into the output and the rejects (`_write_split`); for an ordered layer with
  a window whose kept rows' reasons go into a narrow table joined back by two ordered COPYs.
  Either way rows(output) + rejects + deduped = rows(after sql), exactly.
* run parameters: user SQL reads `$name`; each statement binds the values of exactly the
  parameters it reads (`con.execute(sql, {name: value})`), so a value is data, never SQL text.
* row order: a layer whose SQL ends with ORDER BY (always the case for DS) is written with
  `preserve_insertion_order` on, in one file, so stored order is the ORDER BY; other layers are
  written without it (faster) and their row order is unspecified.

Two databases: a stage whose input is small (`shared_database.SMALL_INPUT_BYTES`) runs on its own
connection of one locked database per process that reaches no file (pyarrow reads the input
layer and writes the output, `_SharedStageRun`; small landing files are read by the landing
reader's database with the same read statement and handed over as Arrow, `_SharedLandingRun`);
every other stage, and a small one that needs more memory or a type pyarrow writes differently,
gets a fresh database locked to its files.

Progress comes from a monitor thread polling `query_progress()` (a percentage in DuckDB 2.0) every
0.2 s; `total` is the input row count (Parquet metadata) or an estimate from the landing files'
size and line length, and `processed` is that share of `total`. Cancel interrupts the running
query from the canceller's thread (`con.interrupt`); the monitor repeats the interrupt while a
query runs, so a cancel that lands between two queries is not lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.domain.params import READER_OPTIONS
from app.domain.states import Stage
from app.executor.engine import csv_arrow
from app.executor.engine.arrow_parquet import ParquetSink
from app.executor.engine.base import LINEAGE_COLUMNS, CancelToken, StageCancelled, StageFailed
from app.executor.engine.inputs import PARQUET_SUFFIX, StageInputs
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
from app.executor.engine.sandbox import (
    SqlGuard,
    bind,
    ensure_single,
    lock_connection,
    open_connection,
    sql_identifier,
    sql_string,
    sql_value,
    translate_error,
)
from app.executor.engine.shared_database import (
    MAX_RESULT_BYTES,
    SMALL_INPUT_BYTES,
    FreshDatabaseNeeded,
    SharedDatabase,
    duckdb_batches,
    fetch_result,
    read_small_input,
    write_result,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
_DATA_FILE = re.compile(r"^data_(\d+)\.parquet$")


class DuckDBEngine(StageEngine):
    """Runs one stage with DuckDB in the calling (worker) thread."""

    name = "duckdb"

    def __init__(
        self, *, per_thread_output: bool = False, small_input_bytes: int = SMALL_INPUT_BYTES
    ) -> None:
        self.per_thread_output = per_thread_output
        """Write unordered layers as one file per thread instead of one file."""
        self.small_input_bytes = small_input_bytes
        """Input layers up to this size run on the shared database; 0: all on fresh ones."""
        self.shared = SharedDatabase()

    def _compile(self, ctx: StageContext) -> Plan:
        guard = SqlGuard(ctx.layer, ctx.input_layer, ctx.parameters.keys())
        spec = ctx.spec
        user_sql = guard.select(spec.sql) if spec.sql else None
        checks = tuple((c.name, guard.expression(c.expr, f"check {c.name!r}")) for c in spec.checks)
        dedupe = spec.dedupe
        keys = tuple(guard.key(k) for k in dedupe.keys) if dedupe else ()
        order_by = guard.order_by(dedupe.order_by) if dedupe and dedupe.order_by else None
        ordered = ctx.layer == "ds" or bool(user_sql and user_sql.ordered)
        if dedupe and order_by is None:
            ordered = True  # "first per key" is then the first in input order
        return Plan(
            query=user_sql.text if user_sql else None,
            ordered=ordered,
            keys=keys,
            order_by=order_by,
            checks=checks,
        )

    def _execute(self, work: StageWork) -> StageCounts:
        run: _SharedStageRun | None = None
        if work.ctx.stage is Stage.LANDING_TO_ODS:
            if self._small_landing(work):
                run = _SharedLandingRun(work, self.shared)
        else:
            table = self._small_input(work)
            if table is not None:
                run = _SharedStageRun(work, self.shared, table)
        if run is not None:
            try:
                return run.execute()
            except FreshDatabaseNeeded as why:
                log.info("%s runs on a fresh database: %s", work.ctx.label, why)
                for folder in (work.ctx.out_dir, work.ctx.rejects_out):
                    shutil.rmtree(folder, ignore_errors=True)
        return _StageRun(work, per_thread=self.per_thread_output).execute()

    def _small_input(self, work: StageWork) -> pa.Table | None:
        """The input as Arrow when the stage can run on the shared database (`shared_database`)."""
        if self.small_input_bytes <= 0:
            return None
        return read_small_input(work.inputs.files, self.small_input_bytes)

    def _small_landing(self, work: StageWork) -> bool:
        """The landing files are few bytes, all under the landing folder its reader may read."""
        if self.small_input_bytes <= 0:
            return False
        landing_dir = work.ctx.landing_dir
        try:
            size = sum(path.stat().st_size for path in work.inputs.files)
        except OSError:
            return False  # the fresh path reads them again and reports what is wrong
        return size <= self.small_input_bytes and all(
            path.is_relative_to(landing_dir) for path in work.inputs.files
        )

    def close(self) -> None:
        """Close the shared database (a stage that runs later creates it again)."""
        self.shared.close()

    def _name_parts(self, folder: Path) -> int:
        """Rename DuckDB's data_N.parquet to part-NNNNN.parquet (name order = N order)."""
        found = []
        for path in folder.iterdir():
            match = _DATA_FILE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        for index, (_, path) in enumerate(sorted(found)):
            path.rename(folder / part_name(index))
        return len(found)


class _StageRun:
    """One stage's DuckDB work: a locked connection, its statements and their progress."""

    split_by_reason = True
    """An unordered layer and its rejects come out of one Arrow pass (`_write_split`)."""

    def __init__(self, work: StageWork, *, per_thread: bool) -> None:
        self.ctx = work.ctx
        self.plan = work.plan
        self.inputs = work.inputs
        self.progress = work.progress
        self.cancel = work.cancel
        self.per_thread = per_thread
        self.layer = work.ctx.layer
        self.input_name = work.ctx.input_layer
        self.query = work.plan.query or f"SELECT * FROM {sql_identifier(self.input_name)}"
        self.out_dir = work.ctx.out_dir
        self.rejects_dir = work.ctx.rejects_out

    def execute(self) -> StageCounts:
        self._make_folders()
        self.progress(0.0)
        plan, out_dir = self.plan, self.out_dir
        con = self._connect()
        monitor = _Monitor(con, self.cancel, self.progress)
        unregister: Callable[[], None] = lambda: None  # noqa: E731
        try:
            prefix = self._open_input(con)
            unregister = self.cancel.on_cancel(lambda: _interrupt(con))
            monitor.start()
            source = f"{prefix}SELECT * FROM (\n{self.query}\n) AS __strata_u"
            if not plan.checks and not plan.dedupe:
                arrow_rows = self._arrow_ods(con)
                if arrow_rows is not None:
                    return StageCounts(after_sql=arrow_rows, rows=arrow_rows)
                monitor.band(0.0, 100.0)
                rows = self._write(con, monitor, source, out_dir)
                self._check_lineage(out_dir)
                return StageCounts(after_sql=rows, rows=rows)
            counts = self._execute_materialised(con, monitor, prefix)
            self._check_lineage(out_dir)
            return counts
        except duckdb.Error as exc:
            if self.cancel.cancelled:
                raise StageCancelled("cancelled") from None
            raise translate_error(
                exc,
                label=self.ctx.label,
                input_name=self.input_name,
                replacements=self.ctx.replacements,
            ) from None
        finally:
            unregister()
            monitor.stop()
            self._release(con)

    # -- what the shared-database path replaces -------------------------------------------

    def _make_folders(self) -> None:
        for folder in (self.out_dir, self.rejects_dir, self.ctx.work_dir / "spill"):
            folder.mkdir(parents=True)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """A fresh database that can reach only this stage's input files and scratch folder."""
        request = self.ctx.request
        return open_connection(
            threads=request.threads,
            memory_limit=request.memory_limit,
            temp_directory=self.ctx.work_dir / "spill",
            preserve_insertion_order=self.plan.ordered,
            allowed_paths=self.inputs.files,
            allowed_directories=[self.out_dir.parent],  # the .tmp- folder of this stage only
        )

    def _open_input(self, con: duckdb.DuckDBPyConnection) -> str:
        """Expose the input, then lock the configuration; returns the statements' WITH prefix."""
        prefix = self._create_input(con, self.inputs)
        lock_connection(con)
        return prefix

    def _write(
        self, con: duckdb.DuckDBPyConnection, monitor: _Monitor, select: str, folder: Path
    ) -> int:
        """Write the rows of `select` into `folder` as the layer's Parquet files; their count."""
        writer = _Writer(
            batch_size=self.ctx.request.params.batch_size,
            per_thread=self.per_thread and not self.plan.ordered,
        )
        return _scalar(self._run(con, monitor, writer.copy(select, folder), "COPY"))

    def _release(self, con: duckdb.DuckDBPyConnection) -> None:
        con.close()

    def _arrow_ods(self, con: duckdb.DuckDBPyConnection) -> int | None:
        """The plain ODS stage of CSV files with pyarrow (`csv_arrow`) where it reads the same as
        DuckDB; None: not taken (nothing was written)."""
        source = self.ctx.request.params.source
        files = self.inputs.files
        if (
            self.ctx.stage is not Stage.LANDING_TO_ODS
            or self.plan.query is not None
            or source.format != "csv"
            or not csv_arrow.eligible(source.options, files, self.ctx.sample_rows)
        ):
            return None
        dialect = csv_arrow.arrow_dialect(con, files, source.options)
        if dialect is None:
            return None
        self.ctx.check_lineage_columns([*dialect.columns, *LINEAGE_COLUMNS])
        total = self.inputs.total

        def on_rows(rows: int) -> None:
            if total:
                self.progress(100.0 * rows / total)

        return csv_arrow.write_ods(
            files=files,
            names=self.inputs.names,
            dialect=dialect,
            out_dir=self.out_dir,
            batch_size=self.ctx.request.params.batch_size,
            threads=self.ctx.request.threads,
            cancel=self.cancel,
            on_rows=on_rows,
            replacements=self.ctx.replacements,
        )

    def _execute_materialised(
        self, con: duckdb.DuckDBPyConnection, monitor: _Monitor, prefix: str
    ) -> StageCounts:
        query, checks, keys = self.query, self.plan.checks, self.plan.keys
        order_by, dedupe, ordered = self.plan.order_by, self.plan.dedupe, self.plan.ordered
        out_dir, rejects_dir = self.out_dir, self.rejects_dir
        reason = (
            "CASE "
            + " ".join(f"WHEN {expr} IS NOT TRUE THEN {sql_string(name)}" for name, expr in checks)
            + " END"
            if checks
            else "NULL::VARCHAR"
        )
        weights = {
            "materialise": 60.0 if dedupe else 70.0,
            "keep": 15.0 if dedupe else 0.0,
            "output": 20.0 if checks else 25.0,
            "rejects": 5.0 if checks else 0.0,
        }
        scale = 100.0 / sum(weights.values())
        bands: dict[str, tuple[float, float]] = {}
        done = 0.0
        for name, weight in weights.items():
            bands[name] = (done, weight * scale)
            done += weight * scale

        # 1. the layer's rows after sql, once (the reason of each row too when there is no dedupe)
        with_reason = bool(checks) and not dedupe
        monitor.band(*bands["materialise"])
        self._run(
            con,
            monitor,
            f"CREATE TEMP TABLE __strata_sql AS {prefix}SELECT *"
            + (f", {reason} AS __strata_reason" if with_reason else "")
            + f" FROM (\n{query}\n) AS __strata_u",
            "CREATE",
        )
        columns = [str(row[0]) for row in con.execute("DESCRIBE __strata_sql").fetchall()]
        if with_reason:
            columns.remove("__strata_reason")
        self.ctx.check_output_columns(columns, with_checks=bool(checks))
        rid = "rowid"
        internal = ["__strata_reason"] if with_reason else []
        if any(c.lower() == "rowid" for c in columns) and (dedupe or ordered):
            # the layer has a column named rowid, which hides DuckDB's: number the rows ourselves
            self._run(
                con,
                monitor,
                "CREATE TEMP TABLE __strata_sql2 AS "
                "SELECT *, row_number() OVER () AS __strata_rid FROM __strata_sql",
                "CREATE",
            )
            con.execute("DROP TABLE __strata_sql")
            con.execute("ALTER TABLE __strata_sql2 RENAME TO __strata_sql")
            rid = "__strata_rid"
            internal.append("__strata_rid")
        star = f"s.* EXCLUDE ({', '.join(internal)})" if internal else "s.*"
        order_rows = f" ORDER BY s.{rid}" if ordered else ""

        # 2. dedupe: winners on narrow columns (keys, order_by, row id), checks on kept rows only
        counts = StageCounts()
        if dedupe and not ordered:
            # the first row id per key in the order_by: a grouped aggregate over the narrow
            # columns, about half the work of the window below; the checks run in step 3
            monitor.band(*bands["keep"])
            self._run(
                con,
                monitor,
                f"CREATE TEMP TABLE __strata_keep AS SELECT first({rid} ORDER BY\n{order_by}\n) "
                f"AS __strata_k FROM __strata_sql GROUP BY {', '.join(keys)}",
                "CREATE",
            )
            source = f"__strata_sql AS s JOIN __strata_keep AS k ON s.{rid} = k.__strata_k"
            why = f"({reason})"
        elif dedupe:
            monitor.band(*bands["keep"])
            window_order = order_by if order_by is not None else rid
            # the window reads only the keys, the order_by columns and the row id; the check
            # expressions are evaluated above the QUALIFY filter, so on kept rows only
            self._run(
                con,
                monitor,
                f"CREATE TEMP TABLE __strata_keep AS SELECT {rid} AS __strata_k, "
                f"{reason} AS __strata_reason FROM __strata_sql QUALIFY row_number() OVER "
                f"(PARTITION BY {', '.join(keys)} ORDER BY\n{window_order}\n) = 1",
                "CREATE",
            )
            source = f"__strata_sql AS s JOIN __strata_keep AS k ON s.{rid} = k.__strata_k"
            why = "k.__strata_reason"
        else:
            source = "__strata_sql AS s"
            why = "s.__strata_reason" if with_reason else "NULL::VARCHAR"

        # 3. the layer, then its rejects
        if not ordered and self.split_by_reason:
            # one pass over the kept rows, split by their check reason into the two layers
            monitor.band(bands["output"][0], bands["output"][1] + bands["rejects"][1])
            counts.rows, counts.rejects = self._write_split(
                con, monitor, f"SELECT {star}, {why} AS __strata_reason FROM {source}"
            )
        else:
            monitor.band(*bands["output"])
            counts.rows = self._write(
                con, monitor, f"SELECT {star} FROM {source} WHERE {why} IS NULL{order_rows}",
                out_dir,
            )
            if checks:
                monitor.band(*bands["rejects"])
                counts.rejects = self._write(
                    con,
                    monitor,
                    f"SELECT {star}, {why} AS _reject_reason FROM {source} "
                    f"WHERE {why} IS NOT NULL{order_rows}",
                    rejects_dir,
                )
        counts.after_sql = _scalar(con.execute("SELECT count(*) FROM __strata_sql"))
        kept = counts.after_sql
        if dedupe:
            kept = _scalar(con.execute("SELECT count(*) FROM __strata_keep"))
        counts.deduped = counts.after_sql - kept
        return counts

    def _write_split(
        self, con: duckdb.DuckDBPyConnection, monitor: _Monitor, select: str
    ) -> tuple[int, int]:
        """Stream `select` (the layer's columns and `__strata_reason`) out of DuckDB as Arrow and
        write its rows with a NULL reason to the layer, the others to the rejects (with the reason
        as `_reject_reason`), with pyarrow's writer on every engine thread; unordered layers only.
        Returns (rows, rejects)."""
        request = self.ctx.request
        rows = rejects = 0
        with self._watched(con, monitor, select, "SELECT") as values:
            reader = con.sql(select, params=values).to_arrow_reader(request.params.batch_size)
            at = reader.schema.get_field_index("__strata_reason")
            layer_schema = reader.schema.remove(at)
            out = ParquetSink(
                self.out_dir, layer_schema, rows=request.params.batch_size, threads=request.threads
            )
            bad = ParquetSink(
                self.rejects_dir,
                layer_schema.append(pa.field(REJECT_REASON, pa.string())),
                rows=request.params.batch_size,
                threads=1,
            ) if self.plan.checks else None
            try:
                for batch in duckdb_batches(reader):
                    self.cancel.raise_if_cancelled()
                    reason = batch.column(at)
                    kept = batch.remove_column(at)
                    if reason.null_count == batch.num_rows or bad is None:
                        out.put(kept)
                        rows += batch.num_rows
                        continue
                    ok = pc.is_null(reason)
                    good = kept.filter(ok)
                    out.put(good)
                    rows += good.num_rows
                    failed = kept.filter(pc.invert(ok)).append_column(
                        REJECT_REASON, reason.filter(pc.invert(ok))
                    )
                    bad.put(failed)
                    rejects += failed.num_rows
                out.finish()
                if bad is not None:
                    bad.finish()
            finally:
                out.abort()
                if bad is not None:
                    bad.abort()
        return rows, rejects

    def _run(
        self, con: duckdb.DuckDBPyConnection, monitor: _Monitor, sql: str, kind: str
    ) -> duckdb.DuckDBPyConnection:
        with self._watched(con, monitor, sql, kind) as values:
            return con.execute(sql, values)

    @contextlib.contextmanager
    def _watched(
        self, con: duckdb.DuckDBPyConnection, monitor: _Monitor, sql: str, kind: str
    ) -> Iterator[dict[str, Any] | None]:
        """One statement's run: refused once cancelled, its parameters' values bound (None:
        none), and followed by the monitor until it ends."""
        self.cancel.raise_if_cancelled()
        values = bind(con, sql, kind, self.ctx.parameters)
        monitor.running = True
        try:
            yield values or None
        finally:
            monitor.running = False
            monitor.finish_band()

    # -- inputs ---------------------------------------------------------------------------

    def _create_input(self, con: duckdb.DuckDBPyConnection, inputs: StageInputs) -> str:
        """Expose the input under its name; returns a WITH prefix for the statements to use.

        A previous layer becomes a view over its Parquet files (binding it reads only footers).
        The landing files become a CTE of the statements that read them instead, so DuckDB
        binds (sniffs) every CSV once per statement rather than once more for a view.
        """
        name = sql_identifier(self.input_name)
        if self.ctx.stage is not Stage.LANDING_TO_ODS:
            paths = ", ".join(sql_string(str(p)) for p in inputs.files)
            self._create(con, f"CREATE TEMP VIEW {name} AS SELECT * FROM read_parquet([{paths}])")
            return ""
        source = self.ctx.request.params.source
        allowed = READER_OPTIONS[source.format]
        options = []
        for key, value in source.options.items():
            if key not in allowed or not re.fullmatch(r"[a-z_]+", key):
                raise StageFailed(f"source option {key!r} is not supported for {source.format}")
            options.append(f", {key} = {sql_value(value)}")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
        ingested = f"TIMESTAMP {sql_string(now)}"
        sample = self.ctx.sample_rows
        if source.format == "parquet":
            paths = ", ".join(sql_string(str(p)) for p in inputs.files)
            names = ", ".join(sql_string(n) for n in inputs.names)
            body = (
                f"SELECT *, [{names}][file_index::BIGINT + 1] AS _source_file, "
                f"{ingested} AS _ingested_at, (file_row_number + 1)::BIGINT AS _row_number "
                f"FROM read_parquet([{paths}]{''.join(options)})"
            )
            if sample is not None:
                body += (
                    f" WHERE file_row_number < {int(sample)} "
                    f"ORDER BY file_index, file_row_number LIMIT {int(sample)}"
                )
        else:
            function = "read_json" if source.format == "jsonl" else "read_csv"
            extra = ", format = 'newline_delimited'" if source.format == "jsonl" else ""
            branches = [
                f"SELECT *, {sql_string(n)} AS _source_file, {ingested} AS _ingested_at, "
                f"row_number() OVER () AS _row_number "
                f"FROM {function}({sql_string(str(path))}{extra}{''.join(options)})"
                for n, path in zip(inputs.names, inputs.files, strict=True)
            ]
            if sample is not None:
                # each file stops after its first N lines; then the first N in name/line order
                branches = [
                    f"(SELECT * FROM ({branch}) WHERE _row_number <= {int(sample)} "
                    f"LIMIT {int(sample)})"
                    for branch in branches
                ]
            body = "\nUNION ALL BY NAME\n".join(branches)
            if sample is not None:
                body = (
                    f"SELECT * FROM (\n{body}\n) "
                    f"ORDER BY _source_file, _row_number LIMIT {int(sample)}"
                )
        return f"WITH {name} AS (\n{body}\n)\n"

    def _check_lineage(self, out_dir: Path) -> None:
        """ODS adds the lineage columns: a source column of the same name is an error."""
        if self.ctx.stage is not Stage.LANDING_TO_ODS:
            return
        files = sorted(out_dir.glob(f"*{PARQUET_SUFFIX}"))
        names = pq.read_schema(files[0]).names if files else []
        self.ctx.check_lineage_columns(names, renamed_suffix=True)

    def _create(self, con: duckdb.DuckDBPyConnection, sql: str) -> None:
        try:
            con.execute(ensure_single(con, sql, "CREATE"))
        except duckdb.Error as exc:
            where = (
                f"source '{self.ctx.request.params.source.path}'"
                if self.ctx.stage is Stage.LANDING_TO_ODS
                else f"input layer '{self.input_name}'"
            )
            raise translate_error(
                exc, label=where, input_name=self.input_name, replacements=self.ctx.replacements
            ) from None


class _SharedStageRun(_StageRun):
    """A small stage on its own connection to the shared locked database (`shared_database`):
    the input registered from Arrow, the output written by pyarrow, no file reached by DuckDB."""

    split_by_reason = False
    """Two `_write`s: they fall back to a fresh database on OOM; a tiny layer gains nothing."""

    def __init__(self, work: StageWork, shared: SharedDatabase, table: pa.Table) -> None:
        super().__init__(work, per_thread=False)
        self.shared = shared
        self.table = table
        self.threads = work.ctx.request.threads
        self.memory_limit = work.ctx.request.memory_limit

    def _make_folders(self) -> None:
        for folder in (self.out_dir, self.rejects_dir):
            folder.mkdir(parents=True)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        return self.shared.connect(threads=self.threads, memory_limit=self.memory_limit)

    def _open_input(self, con: duckdb.DuckDBPyConnection) -> str:
        con.register(self.input_name, self.table)
        return ""

    def _write(
        self, con: duckdb.DuckDBPyConnection, monitor: _Monitor, select: str, folder: Path
    ) -> int:
        try:
            with self._watched(con, monitor, select, "SELECT") as values:
                # a relation streams its rows into the writer as they are computed
                return write_result(
                    con.sql(select, params=values),
                    folder / "data_0.parquet",
                    batch_size=self.ctx.request.params.batch_size,
                    max_bytes=MAX_RESULT_BYTES,
                )
        except duckdb.OutOfMemoryException:
            if self.cancel.cancelled:
                raise
            raise FreshDatabaseNeeded("out of memory on the shared database") from None

    def _run(
        self, con: duckdb.DuckDBPyConnection, monitor: _Monitor, sql: str, kind: str
    ) -> duckdb.DuckDBPyConnection:
        try:
            return super()._run(con, monitor, sql, kind)
        except duckdb.OutOfMemoryException:
            if self.cancel.cancelled:
                raise
            raise FreshDatabaseNeeded("out of memory on the shared database") from None

    def _release(self, con: duckdb.DuckDBPyConnection) -> None:
        self.shared.release(con, threads=self.threads, memory_limit=self.memory_limit)


class _SharedLandingRun(_SharedStageRun):
    """A small landing stage on the shared database: the landing reader of the landing folder
    (`SharedDatabase.reader`) runs only the engine's own read statement of the landing files
    (`_create_input`, the fresh path's statement), its rows come over as Arrow and are registered
    as `landing` on the stage's connection, where the user's SQL, dedupe and checks run."""

    def __init__(self, work: StageWork, shared: SharedDatabase) -> None:
        super().__init__(work, shared, pa.table({}))

    def _open_input(self, con: duckdb.DuckDBPyConnection) -> str:
        prefix = self._create_input(con, self.inputs)
        select = f"{prefix}SELECT * FROM {sql_identifier(self.input_name)}"
        reader = self.shared.reader(
            self.ctx.landing_dir, threads=self.threads, memory_limit=self.memory_limit
        )
        unregister = self.cancel.on_cancel(lambda: _interrupt(reader))
        try:
            self.cancel.raise_if_cancelled()
            ensure_single(reader, select, "SELECT")
            try:
                relation = reader.sql(select)
            except duckdb.Error:
                # binding failed (a bad file or option): executed as a statement, the error
                # also names the statement's line, the message the fresh path gives
                reader.execute(select)
                raise
            self.table = fetch_result(
                relation, batch_size=self.ctx.request.params.batch_size, max_bytes=MAX_RESULT_BYTES
            )
        except duckdb.OutOfMemoryException:
            if self.cancel.cancelled:
                raise
            raise FreshDatabaseNeeded("out of memory reading the landing files") from None
        finally:
            unregister()
            reader.close()
        names = [name.lower() for name in self.table.column_names]
        if len(set(names)) != len(names):
            # a source column named like a lineage column: the fresh path reports it
            raise FreshDatabaseNeeded("a landing column name occurs twice")
        return super()._open_input(con)

    def _arrow_ods(self, con: duckdb.DuckDBPyConnection) -> int | None:
        return None  # pyarrow's CSV reader needs the files, which this connection cannot reach


class _Writer:
    """COPY statements that write Parquet the way every layer is written."""

    def __init__(self, *, batch_size: int, per_thread: bool) -> None:
        self.options = (
            "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, "
            f"ROW_GROUP_SIZE {int(batch_size)}"
        )
        self.per_thread = per_thread

    def copy(self, select: str, folder: Path) -> str:
        if self.per_thread:
            target, extra = folder, ", PER_THREAD_OUTPUT true, OVERWRITE true"
        else:
            target, extra = folder / "data_0.parquet", ""
        return f"COPY ({select}) TO {sql_string(str(target))} ({self.options}{extra})"


class _Monitor(BandPoller):
    """Polls the running query's progress; repeats the interrupt of a cancelled query."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, cancel: CancelToken, progress: Reporter
    ) -> None:
        super().__init__(progress, cancel, seconds=POLL_SECONDS, name="duckdb-progress")
        self.con = con
        self.running = False

    def _active(self) -> bool:
        return self.running

    def _fraction(self) -> float | None:
        try:
            percent = float(self.con.query_progress())
        except duckdb.Error:
            return None
        return percent / 100.0 if percent >= 0 else None

    def _interrupt(self) -> None:
        _interrupt(self.con)


def _interrupt(con: duckdb.DuckDBPyConnection) -> None:
    """Interrupt the running query; a no-op once the connection is closed (cancel is racy)."""
    with contextlib.suppress(duckdb.Error):
        con.interrupt()


def _scalar(result: duckdb.DuckDBPyConnection) -> int:
    row = result.fetchone()
    if row is None:  # pragma: no cover - COPY and count(*) always return one row
        raise StageFailed("the engine returned no row count")
    return int(row[0])
