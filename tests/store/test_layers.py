"""Reading a finished layer for the data service: counts, schema, and JSON/CSV pages of rows."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.store.layers import CHUNK_ROWS, count_rows, iter_rows, layer_schema


def write_layer(folder: Path, parts: list[pa.Table], row_group_size: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, table in enumerate(parts):
        pq.write_table(table, folder / f"part-{index:05d}.parquet", row_group_size=row_group_size)
    return folder


@pytest.fixture
def numbered(tmp_path: Path) -> Path:
    """Rows n = 0 … 24 in stored order, over three files (10, 0, 15 rows) of 4-row groups."""
    return write_layer(
        tmp_path / "ds",
        [
            pa.table({"n": list(range(10)), "s": [f"r{i}" for i in range(10)]}),
            pa.table({"n": pa.array([], pa.int64()), "s": pa.array([], pa.string())}),
            pa.table({"n": list(range(10, 25)), "s": [f"r{i}" for i in range(10, 25)]}),
        ],
    )


def page(path: Path, fmt: Any, limit: int, offset: int) -> bytes:
    return b"".join(iter_rows(path, fmt, limit, offset))


def test_count_rows_adds_the_rows_of_every_file(numbered: Path) -> None:
    assert count_rows(numbered) == 25


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        (25, 0, list(range(25))),
        (100, 0, list(range(25))),
        (3, 0, [0, 1, 2]),
        (3, 3, [3, 4, 5]),  # inside one row group
        (3, 7, [7, 8, 9]),  # to the end of the first file
        (4, 8, [8, 9, 10, 11]),  # across files (and the empty one)
        (5, 12, [12, 13, 14, 15, 16]),  # across row groups
        (10, 20, [20, 21, 22, 23, 24]),  # past the end
        (5, 25, []),
        (5, 1000, []),
        (0, 3, []),
    ],
)
def test_offset_and_limit_count_rows_in_stored_order(
    numbered: Path, limit: int, offset: int, expected: list[int]
) -> None:
    rows = json.loads(page(numbered, "json", limit, offset))
    assert rows == [{"n": n, "s": f"r{n}"} for n in expected]
    text = page(numbered, "csv", limit, offset).decode()
    assert list(csv.reader(io.StringIO(text))) == [["n", "s"]] + [
        [str(n), f"r{n}"] for n in expected
    ]


def test_json_and_csv_values(tmp_path: Path) -> None:
    table = pa.table(
        {
            "d": pa.array([dt.date(2024, 1, 2), None], pa.date32()),
            "ts": pa.array(
                [dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime(2024, 1, 2, 3, 4, 5, 60)],
                pa.timestamp("us"),
            ),
            "tz": pa.array(
                [dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), None],
                pa.timestamp("us", tz="UTC"),
            ),
            "price": pa.array(
                [decimal.Decimal("12.30"), decimal.Decimal("-0.05")], pa.decimal128(12, 2)
            ),
            "x": pa.array([float("nan"), 1.5], pa.float64()),
            "ok": pa.array([True, None], pa.bool_()),
            "text": pa.array(['a, "quoted"\nline', ""], pa.string()),
            "tags": pa.array([["a", "b"], None], pa.list_(pa.string())),
            "kv": pa.array([{"k": 1}, None], pa.struct([("k", pa.int64())])),
        }
    )
    folder = write_layer(tmp_path / "layer", [table])

    rows = json.loads(page(folder, "json", 10, 0))
    assert rows == [
        {
            "d": "2024-01-02",
            "ts": "2024-01-02T03:04:05",
            "tz": "2024-01-02T03:04:05+00:00",
            "price": "12.30",
            "x": None,  # NaN is not JSON
            "ok": True,
            "text": 'a, "quoted"\nline',
            "tags": ["a", "b"],
            "kv": {"k": 1},
        },
        {
            "d": None,
            "ts": "2024-01-02T03:04:05.000060",
            "tz": None,
            "price": "-0.05",
            "x": 1.5,
            "ok": None,
            "text": "",
            "tags": None,
            "kv": None,
        },
    ]
    text = page(folder, "csv", 10, 0).decode()
    assert list(csv.reader(io.StringIO(text))) == [
        ["d", "ts", "tz", "price", "x", "ok", "text", "tags", "kv"],
        [
            "2024-01-02",
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05+00:00",
            "12.30",
            "",
            "true",
            'a, "quoted"\nline',
            '["a", "b"]',
            '{"k": 1}',
        ],
        ["", "2024-01-02T03:04:05.000060", "", "-0.05", "1.5", "", "", "", ""],
    ]


def test_rows_are_streamed_in_chunks_and_later_files_are_not_read(tmp_path: Path) -> None:
    n = CHUNK_ROWS * 3 + 5
    folder = write_layer(
        tmp_path / "big", [pa.table({"n": list(range(n))})], row_group_size=CHUNK_ROWS
    )
    (folder / "part-00001.parquet").write_bytes(b"not parquet: reading it would fail")

    chunks = list(iter_rows(folder, "json", n, 0))

    assert len(chunks) >= 4  # "[", then one chunk per batch, then "]"
    assert [r["n"] for r in json.loads(b"".join(chunks))] == list(range(n))


def test_layer_schema_names_columns_with_sql_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_date": pa.array([dt.date(2024, 1, 1)], pa.date32()),
            "region": pa.array(["north"]),
            "order_count": pa.array([1], pa.int64()),
            "quantity": pa.array([1], pa.int32()),
            "unit_price": pa.array([decimal.Decimal("1.00")], pa.decimal128(12, 2)),
            "revenue_usd": pa.array([1.0]),
            "event_ts": pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us")),
            "ok": pa.array([True]),
        }
    )
    folder = write_layer(tmp_path / "layer", [table])
    assert layer_schema(folder) == [
        {"name": "event_date", "type": "DATE"},
        {"name": "region", "type": "VARCHAR"},
        {"name": "order_count", "type": "BIGINT"},
        {"name": "quantity", "type": "INTEGER"},
        {"name": "unit_price", "type": "DECIMAL(12,2)"},
        {"name": "revenue_usd", "type": "DOUBLE"},
        {"name": "event_ts", "type": "TIMESTAMP"},
        {"name": "ok", "type": "BOOLEAN"},
    ]


def test_an_empty_layer_reads_as_an_empty_page(tmp_path: Path) -> None:
    folder = write_layer(tmp_path / "layer", [pa.table({"n": pa.array([], pa.int64())})])
    assert count_rows(folder) == 0
    assert page(folder, "json", 10, 0) == b"[]"
    assert page(folder, "csv", 10, 0) == b"n\r\n"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_missing_layer_raises_file_not_found_at_once(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "layer"
    if make == "empty":
        folder.mkdir()
    with pytest.raises(FileNotFoundError):
        count_rows(folder)
    with pytest.raises(FileNotFoundError):
        iter_rows(folder, "json", 10, 0)
    with pytest.raises(FileNotFoundError):
        layer_schema(folder)


@pytest.mark.parametrize(("limit", "offset"), [(-1, 0), (1, -1)])
def test_negative_limit_or_offset_is_refused(numbered: Path, limit: int, offset: int) -> None:
    with pytest.raises(ValueError):
        iter_rows(numbered, "json", limit, offset)
