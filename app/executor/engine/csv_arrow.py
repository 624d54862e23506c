"""ODS straight from CSV with pyarrow: the plain landing-to-ODS stage without DuckDB's CSV reader.

An ODS layer without sql, checks or dedupe is the landing rows as strings plus the lineage
columns. DuckDB's `read_csv` followed by its Parquet writer was that stage's bound; here
pyarrow's multithreaded streaming CSV reader parses the files batch by batch and `threads`
writer threads each write one Parquet file (zstd level 1, row groups of `batch_size` rows), so
parsing and writing use every core and memory stays a few batches deep.

The result must be exactly what `read_csv(..., all_varchar = true)` gives, so this path is taken
only where that is sure (`arrow_dialect`; anything else stays on DuckDB's reader):

* the source is CSV with `header = true`, `all_varchar = true` and no options but `delimiter`,
  `quote` and `escape`; no sample cut (a dry run); no compressed file;
* DuckDB's own sniffer (`sniff_csv`, on the stage's sandboxed connection, with the source's
  options) reads each file as a header line, no skipped rows, no comment character, a
  one-character delimiter, a one-character quote (or none) and an escape that is the quote (or
  none); every file has the same columns, in the same order, named as in its header line (DuckDB
  would rename duplicate or empty names). Each file is read with the dialect sniffed in it.

Values then agree: every column is a string, an empty field (quoted or not) is NULL as in DuckDB
(`allow_quoted_nulls`), quoted newlines are kept (`newlines_in_values`). Lineage is what the
DuckDB path writes: `_source_file` (the path relative to the landing directory), one
`_ingested_at` per run, `_row_number` from 1 in file order. The files read are exactly the
stage's resolved landing inputs (`StageInputs.files`), the files the DuckDB connection is allowed.

Cancel is checked between batches (a batch is one `BLOCK_BYTES` block of CSV); progress is the
share of the estimated input rows written so far.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from app.executor.engine.arrow_parquet import ParquetSink
from app.executor.engine.base import LINEAGE_COLUMNS, CancelToken, StageFailed
from app.executor.engine.sandbox import sanitize, sql_string, sql_value

BLOCK_BYTES = 1 << 20
"""CSV bytes per batch: large enough to keep the parser threads busy, small for a quick cancel."""
_FAST_OPTIONS = frozenset({"header", "all_varchar", "delimiter", "quote", "escape"})
_COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz", ".zip")


_EMPTY = "(empty)"
"""How `sniff_csv` shows "none" (no quote, no escape, no comment)."""


@dataclass(frozen=True)
class FileDialect:
    """How pyarrow reads one landing file: what DuckDB's sniffer found in it."""

    delimiter: str
    quote: str | None
    """None: the file has no quoting (DuckDB then keeps quote characters as data)."""


@dataclass(frozen=True)
class ArrowDialect:
    columns: tuple[str, ...]
    """The columns of every file, in order."""
    files: tuple[FileDialect, ...]
    """Per landing file, in input order."""


def eligible(options: Mapping[str, Any], files: Sequence[Path], sample_rows: int | None) -> bool:
    """The source's options and files allow the pyarrow path (before any file is read)."""
    return (
        sample_rows is None
        and set(options) <= _FAST_OPTIONS
        and options.get("header") is True
        and options.get("all_varchar") is True
        and bool(files)
        and not any(p.name.lower().endswith(_COMPRESSED) for p in files)
    )


def arrow_dialect(
    con: duckdb.DuckDBPyConnection, files: Sequence[Path], options: Mapping[str, Any]
) -> ArrowDialect | None:
    """The dialect DuckDB itself sniffs in every file, when pyarrow reads it the same; else None.

    `con` is the stage's sandboxed connection: it can read exactly `files`.
    """
    extra = "".join(f", {key} = {sql_value(value)}" for key, value in options.items())
    columns: tuple[str, ...] | None = None
    dialects: list[FileDialect] = []
    for path in files:
        try:
            row = con.execute(
                "SELECT Delimiter, Quote, Escape, Comment, SkipRows, HasHeader, Columns "
                f"FROM sniff_csv({sql_string(str(path))}{extra})"
            ).fetchone()
        except duckdb.Error:
            return None  # DuckDB's reader gives the proper error
        if row is None:
            return None
        delimiter, quote, escape, comment, skip, header, sniffed = row
        names = tuple(str(c["name"]) for c in sniffed)
        quote = None if quote == _EMPTY else quote
        plain = (
            len(delimiter) == 1
            and (quote is None or len(quote) == 1)
            and escape in (_EMPTY, quote)
            and comment == _EMPTY
            and skip == 0
            and header is True
            and len({n.lower() for n in names}) == len(names)
            and (columns is None or names == columns)
        )
        if not plain:
            return None
        dialect = FileDialect(delimiter=delimiter, quote=quote)
        try:
            if names != _header(path, dialect):
                return None
        except (pa.ArrowException, OSError):
            return None  # e.g. a row longer than the probe block: DuckDB reads it
        columns = names
        dialects.append(dialect)
    if columns is None:
        return None
    return ArrowDialect(columns=columns, files=tuple(dialects))


def _parse_options(dialect: FileDialect) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(
        delimiter=dialect.delimiter,
        quote_char=dialect.quote if dialect.quote is not None else False,
        double_quote=True,
        newlines_in_values=dialect.quote is not None,
    )


def _header(path: Path, dialect: FileDialect) -> tuple[str, ...]:
    """The column names of the file's header line, as pyarrow reads them."""
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 20, use_threads=False),
        parse_options=_parse_options(dialect),
    )
    try:
        return tuple(reader.schema.names)
    finally:
        reader.close()


def write_ods(
    *,
    files: Sequence[Path],
    names: Sequence[str],
    dialect: ArrowDialect,
    out_dir: Path,
    batch_size: int,
    threads: int,
    cancel: CancelToken,
    on_rows: Callable[[int], None],
    replacements: Sequence[tuple[str, str]],
) -> int:
    """Write the ODS layer as `data_<n>.parquet` files in `out_dir`; returns the row count."""
    ingested = pa.scalar(dt.datetime.now(dt.UTC).replace(tzinfo=None), pa.timestamp("us"))
    schema = pa.schema(
        [pa.field(c, pa.string()) for c in dialect.columns]
        + [
            pa.field(name, kind, nullable=nullable)  # as DuckDB writes them
            for name, kind, nullable in zip(
                LINEAGE_COLUMNS,
                (pa.string(), pa.timestamp("us"), pa.int64()),
                (False, False, True),
                strict=True,
            )
        ]
    )
    sink = ParquetSink(out_dir, schema, rows=batch_size, threads=threads)
    rows = 0
    try:
        for batch in _batches(files, names, dialect, ingested, schema, cancel):
            sink.put(batch)
            rows += batch.num_rows
            on_rows(rows)
        sink.finish()
    except pa.ArrowException as exc:
        message = sanitize(str(exc).strip(), replacements)
        raise StageFailed(f"source: {message}") from None
    finally:
        sink.abort()
    return rows


def _batches(
    files: Sequence[Path],
    names: Sequence[str],
    dialect: ArrowDialect,
    ingested: pa.Scalar,
    schema: pa.Schema,
    cancel: CancelToken,
) -> Iterator[pa.RecordBatch]:
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in dialect.columns},
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        null_values=[""],
    )
    read = pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True)
    for path, name, file_dialect in zip(files, names, dialect.files, strict=True):
        cancel.raise_if_cancelled()
        constants = _Constants(pa.scalar(name, pa.string()), ingested)
        reader = pacsv.open_csv(path, read_options=read, parse_options=_parse_options(file_dialect),
                                convert_options=convert)
        try:
            if tuple(reader.schema.names) != dialect.columns:  # pragma: no cover - sniffed above
                raise StageFailed(f"source file '{name}' changed while it was read")
            start = 1
            for batch in reader:
                cancel.raise_if_cancelled()
                n = batch.num_rows
                lineage = [*constants.take(n), pa.arange(start, start + n)]
                start += n
                yield pa.RecordBatch.from_arrays([*batch.columns, *lineage], schema=schema)
        finally:
            reader.close()


class _Constants:
    """The constant lineage columns of one file, built once and sliced (zero-copy) per batch."""

    def __init__(self, *values: pa.Scalar) -> None:
        self.values = values
        self.arrays: list[pa.Array] = []

    def take(self, rows: int) -> list[pa.Array]:
        if not self.arrays or len(self.arrays[0]) < rows:
            self.arrays = [pa.repeat(value, rows) for value in self.values]
        return [array.slice(0, rows) for array in self.arrays]
