"""The DuckDB engine: one stage of one job, from its input to one Parquet layer (plus rejects).

Layout (all under `<warehouse_dir>/<job_id>/`):

    ods/ dwd/ dwd_rejects/ dws/ ds/        finished layers, Parquet (zstd level 1), files part-NNNNN
    .tmp-<layer>-<uuid>/out/ rejects/ spill/   one running stage: its output, rejects, DuckDB spill

A stage writes into its own `.tmp-…` folder and, when everything succeeded, moves `out/` (and
`rejects/`) into place: an existing layer folder is swapped atomically (`renameat2(RENAME_EXCHANGE)`
on Linux; elsewhere two renames) and the old one deleted, so a reader never sees a half-written
layer and a re-run replaces, never appends. The `.tmp-…` folder is removed whatever happens, so a
failed or cancelled stage leaves nothing behind (the previous finished layer, if any, stays).

What a stage does (DESIGN.md, `params`):

* input: for LandingToODS the source files (the glob resolved in Python, confined to the landing
  directory after resolving symlinks, sorted by relative path) as the relation `landing`, with the
  lineage columns `_source_file` (the path relative to the landing directory, e.g.
  `orders/orders_0001.csv`), `_ingested_at` (one UTC TIMESTAMP per run) and `_row_number` (BIGINT,
  1-based row number within its file, in file order). CSV and JSONL files are read one by one with
  `row_number() OVER ()` (a streaming window, which DuckDB always runs in source order) and combined
  with `UNION ALL BY NAME`; Parquet files are read in one scan with the reader's virtual columns
  `file_index` and `file_row_number`. Other stages read the previous layer's Parquet files under
  its name (`ods`, `dwd`, `dws`).
* `sql` (or `SELECT * FROM <input>`), then `dedupe`, then `checks`. Without dedupe and checks the
  result streams straight into the Parquet writer. Otherwise it is materialised once in a temp
  table (in memory, spilling to `spill/`), the winners of the dedupe are picked on narrow columns
  (the keys, the order_by columns and the row id) with a window and the check reason of each kept
  row is computed once into a narrow table, which is then joined back to write the output and the
  rejects: rows(output) + rejects + deduped = rows(after sql), exactly.
* row order: a layer whose SQL ends with ORDER BY (always the case for DS) is written with
  `preserve_insertion_order` on, in one file, so stored order is the ORDER BY; other layers are
  written without it (faster) and their row order is unspecified.

Progress comes from a monitor thread polling `query_progress()` (a percentage in DuckDB 2.0) every
0.2 s; `total` is the input row count (Parquet metadata) or an estimate from the landing files'
size and line length, and `processed` is that share of `total`. Cancel interrupts the running
query from the canceller's thread (`con.interrupt`); the monitor repeats the interrupt while a
query runs, so a cancel that lands between two queries is not lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from app.domain.params import READER_OPTIONS, Layer, check_relative_path
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
from app.executor.engine.sandbox import (
    SqlGuard,
    check_output_columns,
    ensure_single,
    lock_connection,
    open_connection,
    sql_identifier,
    sql_string,
    sql_value,
    translate_error,
)

log = logging.getLogger(__name__)

PARQUET_SUFFIX = ".parquet"
POLL_SECONDS = 0.2
_GLOB_CHARS = re.compile(r"[*?\[\]{}]")
_PREVIOUS_STAGE = {"ods": Stage.LANDING_TO_ODS, "dwd": Stage.ODS_TO_DWD, "dws": Stage.DWD_TO_DWS}
_DATA_FILE = re.compile(r"^data_(\d+)\.parquet$")


class DuckDBEngine:
    """Runs one stage with DuckDB in the calling (worker) thread."""

    name = "duckdb"

    def __init__(self, *, per_thread_output: bool = False) -> None:
        self.per_thread_output = per_thread_output
        """Write unordered layers as one file per thread instead of one file."""

    def run_stage(
        self, request: StageRequest, report: ProgressCallback, cancel: CancelToken
    ) -> LayerResult:
        return _StageRun(request, report, cancel, per_thread_output=self.per_thread_output).run()


@dataclass
class _Inputs:
    files: list[Path]
    """Resolved absolute paths DuckDB may read."""
    names: list[str]
    """For landing files: the path relative to the landing directory (lineage)."""
    total: int
    """Input rows: exact for Parquet, an estimate for CSV/JSONL (0 if unknown)."""
    exact: bool


@dataclass
class _Counts:
    after_sql: int = 0
    rows: int = 0
    rejects: int = 0
    deduped: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class _StageRun:
    def __init__(
        self,
        request: StageRequest,
        report: ProgressCallback,
        cancel: CancelToken,
        *,
        per_thread_output: bool,
    ) -> None:
        self.request = request
        self.report = report
        self.cancel = cancel
        self.per_thread_output = per_thread_output
        self.stage = Stage(request.stage)
        self.layer = self.stage.layer
        self.input_name = self.stage.input_layer
        self.spec: Layer = request.params.layers.get(self.layer)
        self.landing_dir = request.landing_dir.resolve()
        self.warehouse_dir = request.warehouse_dir.resolve()
        self.replacements = [
            (str(self.landing_dir) + os.sep, "landing/"),
            (str(self.landing_dir), "landing"),
            (str(self.warehouse_dir) + os.sep, "warehouse/"),
            (str(self.warehouse_dir), "warehouse"),
        ]
        self._progress_lock = threading.Lock()
        self._last_percent = -1.0
        self._total = 0

    # -- the stage ------------------------------------------------------------------------

    def run(self) -> LayerResult:
        started = time.perf_counter()
        self.cancel.raise_if_cancelled()
        self.request.check_job_id()
        job_dir = self.warehouse_dir / self.request.job_id

        with SqlGuard(self.layer, self.input_name) as guard:  # refuse bad SQL before any I/O
            user_sql = guard.select(self.spec.sql) if self.spec.sql else None
            checks = [
                (c.name, guard.expression(c.expr, f"check {c.name!r}")) for c in self.spec.checks
            ]
            dedupe = self.spec.dedupe
            keys = [guard.key(k) for k in dedupe.keys] if dedupe else []
            order_by = guard.order_by(dedupe.order_by) if dedupe and dedupe.order_by else None

        if self.stage is Stage.LANDING_TO_ODS:
            inputs = self._landing_inputs()
        else:
            inputs = self._layer_inputs(job_dir)
        self._total = inputs.total
        ordered = self.layer == "ds" or bool(user_sql and user_sql.ordered)
        if dedupe and order_by is None:
            ordered = True  # "first per key" is then the first in input order
        query = user_sql.text if user_sql else f"SELECT * FROM {sql_identifier(self.input_name)}"

        job_dir.mkdir(parents=True, exist_ok=True)
        work = job_dir / f".tmp-{self.layer}-{uuid.uuid4().hex}"
        out_dir, rejects_dir, spill_dir = work / "out", work / "rejects", work / "spill"
        try:
            for folder in (out_dir, rejects_dir, spill_dir):
                folder.mkdir(parents=True)
            self._report(0.0)
            counts = self._execute(
                inputs=inputs,
                query=query,
                checks=checks,
                keys=keys,
                order_by=order_by,
                dedupe=dedupe is not None,
                ordered=ordered,
                out_dir=out_dir,
                rejects_dir=rejects_dir,
                spill_dir=spill_dir,
            )
            self.cancel.raise_if_cancelled()
            layer_dir = job_dir / self.layer
            rejects_path: Path | None = job_dir / f"{self.layer}_rejects"
            if checks:
                assert rejects_path is not None
                _name_parts(rejects_dir)
                _publish(rejects_dir, rejects_path, work)
            else:
                shutil.rmtree(job_dir / f"{self.layer}_rejects", ignore_errors=True)
                rejects_path = None
            files = _name_parts(out_dir)
            _publish(out_dir, layer_dir, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

        processed = inputs.total if inputs.exact else counts.after_sql
        self._report(100.0, processed=processed, total=processed, final=True)
        return LayerResult(
            layer=self.layer,
            rows=counts.rows,
            path=str(layer_dir),
            seconds=round(time.perf_counter() - started, 3),
            rejects=counts.rejects,
            deduped=counts.deduped,
            rejects_path=str(rejects_path) if rejects_path else None,
            files=files,
            extra={"rows_after_sql": counts.after_sql, **counts.extra},
        )

    def _execute(
        self,
        *,
        inputs: _Inputs,
        query: str,
        checks: list[tuple[str, str]],
        keys: list[str],
        order_by: str | None,
        dedupe: bool,
        ordered: bool,
        out_dir: Path,
        rejects_dir: Path,
        spill_dir: Path,
    ) -> _Counts:
        con = open_connection(
            threads=self.request.threads,
            memory_limit=self.request.memory_limit,
            temp_directory=spill_dir,
            preserve_insertion_order=ordered,
            allowed_paths=inputs.files,
            allowed_directories=[out_dir.parent],  # the .tmp- folder of this stage only
        )
        monitor = _Monitor(con, self.cancel, self._report)
        unregister: Callable[[], None] = lambda: None  # noqa: E731
        label = f"layer {self.layer}" + (" sql" if self.spec.sql else "")
        try:
            prefix = self._create_input(con, inputs)
            lock_connection(con)
            unregister = self.cancel.on_cancel(lambda: _interrupt(con))
            monitor.start()
            writer = _Writer(
                batch_size=self.request.params.batch_size,
                per_thread=self.per_thread_output and not ordered,
            )
            source = f"{prefix}SELECT * FROM (\n{query}\n) AS __strata_u"
            if not checks and not dedupe:
                monitor.band(0.0, 100.0)
                copy = writer.copy(source, out_dir)
                rows = _scalar(self._run(con, monitor, copy, "COPY"))
                self._check_lineage(out_dir)
                return _Counts(after_sql=rows, rows=rows)
            counts = self._execute_materialised(
                con,
                monitor,
                writer,
                prefix,
                query,
                checks,
                keys,
                order_by,
                dedupe,
                ordered,
                out_dir,
                rejects_dir,
            )
            self._check_lineage(out_dir)
            return counts
        except duckdb.Error as exc:
            if self.cancel.cancelled:
                raise StageCancelled("cancelled") from None
            raise translate_error(
                exc, label=label, input_name=self.input_name, replacements=self.replacements
            ) from None
        finally:
            unregister()
            monitor.stop()
            con.close()

    def _execute_materialised(
        self,
        con: duckdb.DuckDBPyConnection,
        monitor: _Monitor,
        writer: _Writer,
        prefix: str,
        query: str,
        checks: list[tuple[str, str]],
        keys: list[str],
        order_by: str | None,
        dedupe: bool,
        ordered: bool,
        out_dir: Path,
        rejects_dir: Path,
    ) -> _Counts:
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
        check_output_columns(self.layer, columns, with_checks=bool(checks))
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
        if dedupe:
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
            why = "s.__strata_reason" if with_reason else "NULL"

        # 3. the layer, then its rejects
        counts = _Counts()
        monitor.band(*bands["output"])
        copy = writer.copy(f"SELECT {star} FROM {source} WHERE {why} IS NULL{order_rows}", out_dir)
        counts.rows = _scalar(self._run(con, monitor, copy, "COPY"))
        if checks:
            monitor.band(*bands["rejects"])
            copy = writer.copy(
                f"SELECT {star}, {why} AS _reject_reason FROM {source} "
                f"WHERE {why} IS NOT NULL{order_rows}",
                rejects_dir,
            )
            counts.rejects = _scalar(self._run(con, monitor, copy, "COPY"))
        counts.after_sql = _scalar(con.execute("SELECT count(*) FROM __strata_sql"))
        kept = counts.after_sql
        if dedupe:
            kept = _scalar(con.execute("SELECT count(*) FROM __strata_keep"))
        counts.deduped = counts.after_sql - kept
        if counts.rows + counts.rejects != kept:  # pragma: no cover - an engine bug
            raise StageFailed(
                f"layer {self.layer}: rows were lost ({counts.rows} + {counts.rejects} != {kept})"
            )
        return counts

    def _run(
        self, con: duckdb.DuckDBPyConnection, monitor: _Monitor, sql: str, kind: str
    ) -> duckdb.DuckDBPyConnection:
        self.cancel.raise_if_cancelled()
        ensure_single(con, sql, kind)
        monitor.running = True
        try:
            return con.execute(sql)
        finally:
            monitor.running = False
            monitor.finish_band()

    # -- inputs ---------------------------------------------------------------------------

    def _landing_inputs(self) -> _Inputs:
        source = self.request.params.source
        try:
            check_relative_path(source.path)
        except ValueError as exc:
            raise StageFailed(f"source path {source.path!r}: {exc}") from None
        if not self.landing_dir.is_dir():
            raise StageFailed("the landing directory does not exist")
        try:
            matches = sorted(
                source_matches(self.landing_dir, source),
                key=lambda p: p.relative_to(self.landing_dir).as_posix(),
            )
        except (ValueError, NotImplementedError) as exc:
            raise StageFailed(f"source path {source.path!r}: {exc}") from None
        files: list[Path] = []
        names: list[str] = []
        for match in matches:
            name = match.relative_to(self.landing_dir).as_posix()
            try:
                resolved = match.resolve(strict=True)
            except (OSError, RuntimeError):
                raise StageFailed(f"source file '{name}' cannot be resolved") from None
            if not resolved.is_relative_to(self.landing_dir):
                raise StageFailed(
                    f"source file '{name}' points outside the landing directory; refused"
                )
            if not resolved.is_file():
                continue  # a directory the glob matched
            if _GLOB_CHARS.search(str(resolved)):
                raise StageFailed(
                    f"source file '{name}': file names with glob characters (*?[]{{}}) "
                    "cannot be read"
                )
            files.append(resolved)
            names.append(name)
        if not files:
            raise StageFailed(
                f"source path '{source.path}' matched no files in the landing directory"
            )
        if source.format == "parquet":
            total = _parquet_rows(files, self.replacements)
            return _Inputs(files, names, total, exact=True)
        return _Inputs(files, names, _estimate_lines(files, source.options), exact=False)

    def _layer_inputs(self, job_dir: Path) -> _Inputs:
        folder = job_dir / self.input_name
        previous = _PREVIOUS_STAGE[self.input_name]
        if not folder.is_dir():
            raise StageFailed(
                f"input layer '{self.input_name}' of job {self.request.job_id} is missing; "
                f"run {previous.value} first"
            )
        files = sorted(p.resolve() for p in folder.glob(f"*{PARQUET_SUFFIX}"))
        if not files:
            raise StageFailed(
                f"input layer '{self.input_name}' of job {self.request.job_id} has no Parquet "
                f"files; run {previous.value} again"
            )
        for path in files:
            if not path.is_relative_to(job_dir.resolve()) or not path.is_file():
                raise StageFailed(f"input layer '{self.input_name}' holds a foreign file; refused")
        return _Inputs(files, [], _parquet_rows(files, self.replacements), exact=True)

    def _create_input(self, con: duckdb.DuckDBPyConnection, inputs: _Inputs) -> str:
        """Expose the input under its name; returns a WITH prefix for the statements to use.

        A previous layer becomes a view over its Parquet files (binding it reads only footers).
        The landing files become a CTE of the statements that read them instead, so DuckDB
        binds (sniffs) every CSV once per statement rather than once more for a view.
        """
        name = sql_identifier(self.input_name)
        if self.stage is not Stage.LANDING_TO_ODS:
            paths = ", ".join(sql_string(str(p)) for p in inputs.files)
            self._create(con, f"CREATE TEMP VIEW {name} AS SELECT * FROM read_parquet([{paths}])")
            return ""
        source = self.request.params.source
        allowed = READER_OPTIONS[source.format]
        options = []
        for key, value in source.options.items():
            if key not in allowed or not re.fullmatch(r"[a-z_]+", key):
                raise StageFailed(f"source option {key!r} is not supported for {source.format}")
            options.append(f", {key} = {sql_value(value)}")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
        ingested = f"TIMESTAMP {sql_string(now)}"
        if source.format == "parquet":
            paths = ", ".join(sql_string(str(p)) for p in inputs.files)
            names = ", ".join(sql_string(n) for n in inputs.names)
            body = (
                f"SELECT *, [{names}][file_index::BIGINT + 1] AS _source_file, "
                f"{ingested} AS _ingested_at, (file_row_number + 1)::BIGINT AS _row_number "
                f"FROM read_parquet([{paths}]{''.join(options)})"
            )
        else:
            function = "read_json" if source.format == "jsonl" else "read_csv"
            extra = ", format = 'newline_delimited'" if source.format == "jsonl" else ""
            body = "\nUNION ALL BY NAME\n".join(
                f"SELECT *, {sql_string(n)} AS _source_file, {ingested} AS _ingested_at, "
                f"row_number() OVER () AS _row_number "
                f"FROM {function}({sql_string(str(path))}{extra}{''.join(options)})"
                for n, path in zip(inputs.names, inputs.files, strict=True)
            )
        return f"WITH {name} AS (\n{body}\n)\n"

    def _check_lineage(self, out_dir: Path) -> None:
        """ODS adds the lineage columns: a source column of the same name is an error."""
        if self.stage is not Stage.LANDING_TO_ODS:
            return
        files = sorted(out_dir.glob(f"*{PARQUET_SUFFIX}"))
        names = pq.read_schema(files[0]).names if files else []
        for column in LINEAGE_COLUMNS:
            if names.count(column) > 1 or any(re.fullmatch(f"{column}_\\d+", n) for n in names):
                raise StageFailed(
                    f"source '{self.request.params.source.path}' has a column named "
                    f"'{column}', which ODS adds as lineage; rename it"
                )

    def _create(self, con: duckdb.DuckDBPyConnection, sql: str) -> None:
        try:
            con.execute(ensure_single(con, sql, "CREATE"))
        except duckdb.Error as exc:
            where = (
                f"source '{self.request.params.source.path}'"
                if self.stage is Stage.LANDING_TO_ODS
                else f"input layer '{self.input_name}'"
            )
            raise translate_error(
                exc, label=where, input_name=self.input_name, replacements=self.replacements
            ) from None

    # -- progress -------------------------------------------------------------------------

    def _report(
        self,
        percent: float,
        *,
        processed: int | None = None,
        total: int | None = None,
        final: bool = False,
    ) -> None:
        if not final:
            percent = min(percent, 99.0)  # 100 % is said once, at the end, with exact counts
        with self._progress_lock:
            if not final and percent <= self._last_percent:
                return
            self._last_percent = percent
            total = self._total if total is None else total
            if processed is None:
                processed = min(total, int(total * percent / 100.0))
            progress = Progress(
                percent=round(min(percent, 100.0), 2), processed=processed, total=total
            )
        try:
            self.report(progress)
        except Exception:  # a broken progress sink must not fail the stage
            log.exception("progress callback failed")


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


class _Monitor:
    """Polls query progress every POLL_SECONDS; repeats the interrupt of a cancelled query."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        cancel: CancelToken,
        report: Callable[[float], None],
    ) -> None:
        self.con = con
        self.cancel = cancel
        self.report = report
        self.running = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="duckdb-progress", daemon=True)
        self._start = 0.0
        self._width = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def band(self, start: float, width: float) -> None:
        """The next query's 0-100 % maps to start ... start + width of the stage."""
        self._start, self._width = start, width

    def finish_band(self) -> None:
        self.report(self._start + self._width)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            if not self.running:
                continue
            if self.cancel.cancelled:
                _interrupt(self.con)
                continue
            try:
                percent = float(self.con.query_progress())
            except duckdb.Error:
                continue
            if percent >= 0:
                self.report(self._start + self._width * min(percent, 100.0) / 100.0)


def _interrupt(con: duckdb.DuckDBPyConnection) -> None:
    """Interrupt the running query; a no-op once the connection is closed (cancel is racy)."""
    with contextlib.suppress(duckdb.Error):
        con.interrupt()


def _scalar(result: duckdb.DuckDBPyConnection) -> int:
    row = result.fetchone()
    if row is None:  # pragma: no cover - COPY and count(*) always return one row
        raise StageFailed("the engine returned no row count")
    return int(row[0])


# -- files ------------------------------------------------------------------------------------


def _name_parts(folder: Path) -> int:
    """Rename DuckDB's data_N.parquet to part-NNNNN.parquet (name order = N order)."""
    found = []
    for path in folder.iterdir():
        match = _DATA_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    for index, (_, path) in enumerate(sorted(found)):
        path.rename(folder / f"part-{index:05d}{PARQUET_SUFFIX}")
    return len(found)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _publish(src: Path, dest: Path, work: Path) -> None:
    """Move a finished folder into place, replacing what was there (removed afterwards)."""
    if not dest.exists() and not dest.is_symlink():
        os.rename(src, dest)
        return
    if _exchange(src, dest):
        shutil.rmtree(src, ignore_errors=True)  # src now holds the old layer
        return
    old = work / f"old-{dest.name}"
    os.rename(dest, old)
    os.rename(src, dest)
    shutil.rmtree(old, ignore_errors=True)


def _parquet_rows(files: list[Path], replacements: list[tuple[str, str]]) -> int:
    total = 0
    for path in files:
        try:
            total += pq.read_metadata(path).num_rows
        except Exception as exc:  # pyarrow raises several types for a broken file
            message = str(exc)
            for absolute, relative in replacements:
                message = message.replace(absolute, relative)
            name = str(path)
            for absolute, relative in replacements:
                name = name.replace(absolute, relative)
            raise StageFailed(f"'{name}' is not a readable Parquet file: {message}") from None
    return total


def _estimate_lines(files: list[Path], options: dict[str, object]) -> int:
    """Rows of text files, estimated from their size and the line length of the first MiB."""
    if options.get("compression") not in (None, "none", "auto") or any(
        p.suffix in (".gz", ".zst", ".zstd", ".bz2", ".xz") for p in files
    ):
        return 0
    try:
        with files[0].open("rb") as handle:
            sample = handle.read(1 << 20)
        size = sum(p.stat().st_size for p in files)
    except OSError:
        return 0
    lines = sample.count(b"\n")
    if not sample or lines == 0:
        return len(files)
    header = 1 if options.get("header", True) else 0
    estimate = size * lines / len(sample) - header * len(files)
    return max(0, round(estimate))
