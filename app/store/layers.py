"""Reading a finished layer (a folder of Parquet files) for the data service.

A layer folder holds `part-NNNNN.parquet` files; their rows in file-name order, and within a file in
stored order, are the layer's row order (for DS: the ORDER BY of its SQL, which the engine keeps).
`offset` and `limit` count rows in that order. Files are read with pyarrow one row group at a time,
so a page never holds more than a row group (plus one output chunk) in memory, however large the
layer, and row groups before `offset` are skipped using the footers, without being read.

Values as written by `iter_rows`:

* JSON (one array of objects, keys in column order): DATE, TIME and TIMESTAMP values are ISO 8601
  strings (`2024-03-15`, `2024-03-15T12:34:56`, microseconds only when not zero; a timestamp with a
  time zone carries its offset); DECIMAL values are strings (`"12.30"`, so no precision is lost in
  JSON numbers); NaN and infinities, which JSON cannot hold, are null; binary values are base64
  strings; lists and structs are JSON arrays and objects.
* CSV (RFC 4180, a header row, `\\r\\n` line ends, values quoted only when needed): the same text
  as in JSON for dates, times, timestamps and decimals; NULL is an empty field; lists and structs
  are JSON text.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

CHUNK_ROWS = 2048
"""Rows converted and yielded at a time."""


def layer_files(path: Path) -> list[Path]:
    """The Parquet files of a layer, in row order (name order); FileNotFoundError if none."""
    if not path.is_dir():
        raise FileNotFoundError(f"layer folder {path.name!r} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())
    if not files:
        raise FileNotFoundError(f"layer folder {path.name!r} holds no Parquet files")
    return files


def count_rows(path: Path) -> int:
    """Rows of a layer, from the Parquet footers (no data is read)."""
    return sum(pq.read_metadata(f).num_rows for f in layer_files(path))


def layer_schema(path: Path) -> list[dict[str, str]]:
    """The layer's columns: `[{"name": ..., "type": ...}]`, types in SQL (DuckDB) terms."""
    schema = pq.read_schema(layer_files(path)[0])
    return [{"name": f.name, "type": sql_type(f.type)} for f in schema]


def iter_rows(
    path: Path, fmt: Literal["json", "csv"], limit: int, offset: int = 0
) -> Iterator[bytes]:
    """Stream rows `offset` … `offset + limit - 1` of a layer as a JSON array or as CSV.

    Chunks are UTF-8 bytes; their concatenation is the whole document. The layer's files are
    listed when this is called, so a missing or empty layer raises FileNotFoundError at once,
    before any byte is produced.
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    if fmt not in ("json", "csv"):
        raise ValueError(f"unknown format {fmt!r}")
    files = layer_files(path)
    names = pq.read_schema(files[0]).names
    batches = _batches(files, limit, offset)
    if fmt == "json":
        return _json_chunks(names, batches)
    return _csv_chunks(names, batches)


def empty_document(fmt: Literal["json", "csv"]) -> bytes:
    """What `iter_rows` gives for no rows and no columns (a layer without rejects)."""
    return b"[]" if fmt == "json" else b""


# -- reading ----------------------------------------------------------------------------------


def _batches(files: list[Path], limit: int, offset: int) -> Iterator[pa.RecordBatch]:
    """Record batches holding exactly the requested rows, in order."""
    skip, left = offset, limit
    for file in files:
        if left <= 0:
            return
        with pq.ParquetFile(file) as parquet:
            meta = parquet.metadata
            if skip >= meta.num_rows:
                skip -= meta.num_rows
                continue
            for index in range(meta.num_row_groups):
                if left <= 0:
                    return
                group_rows = meta.row_group(index).num_rows
                if skip >= group_rows:
                    skip -= group_rows
                    continue
                for batch in parquet.iter_batches(
                    batch_size=CHUNK_ROWS, row_groups=[index], use_threads=False
                ):
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    batch = batch.slice(skip, left)
                    skip = 0
                    left -= batch.num_rows
                    if batch.num_rows:
                        yield batch
                    if left <= 0:
                        return


# -- formatting -------------------------------------------------------------------------------


def _json_chunks(names: list[str], batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    yield b"["
    first = True
    for batch in batches:
        columns = [_json_column(column) for column in batch.columns]
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        text = json.dumps(rows, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        yield (text[1:-1] if first else "," + text[1:-1]).encode()
        first = False
    yield b"]"


def _csv_chunks(names: list[str], batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    yield buffer.getvalue().encode()
    for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        columns = [_csv_column(column) for column in batch.columns]
        writer.writerows(zip(*columns, strict=True))
        yield buffer.getvalue().encode()


def _json_column(column: pa.Array) -> list[Any]:
    kind = column.type
    values = column.to_pylist()
    if pa.types.is_floating(kind):
        return [v if v is None or math.isfinite(v) else None for v in values]
    if (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
    ):
        return values
    return [_json_value(v) for v in values]


def _csv_column(column: pa.Array) -> list[Any]:
    kind = column.type
    values = column.to_pylist()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
        return ["" if v is None else v for v in values]
    return [_csv_value(v) for v in values]


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):  # a MAP value comes as a list of (key, value) tuples
        return [_json_value(v) for v in value]
    return str(value)  # timedelta and anything else: its text


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return json.dumps(_json_value(value), ensure_ascii=False, allow_nan=False)
    text = _json_value(value)
    return "" if text is None else text


def sql_type(arrow_type: pa.DataType) -> str:
    """A Parquet/Arrow column type named as DuckDB names it (VARCHAR, BIGINT, DECIMAL(12,2) …)."""
    simple = {
        pa.string(): "VARCHAR",
        pa.large_string(): "VARCHAR",
        pa.utf8(): "VARCHAR",
        pa.bool_(): "BOOLEAN",
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.uint8(): "UTINYINT",
        pa.uint16(): "USMALLINT",
        pa.uint32(): "UINTEGER",
        pa.uint64(): "UBIGINT",
        pa.float16(): "FLOAT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.date32(): "DATE",
        pa.date64(): "DATE",
        pa.binary(): "BLOB",
        pa.large_binary(): "BLOB",
    }
    if arrow_type in simple:
        return simple[arrow_type]
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP WITH TIME ZONE" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_time(arrow_type):
        return "TIME"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return f"{sql_type(arrow_type.value_type)}[]"
    if pa.types.is_struct(arrow_type):
        fields = ", ".join(f"{f.name} {sql_type(f.type)}" for f in arrow_type)
        return f"STRUCT({fields})"
    return str(arrow_type).upper()
