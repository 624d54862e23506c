"""Parquet written by pyarrow from a stream of record batches, on several threads at once.

The layers DuckDB's writer was slowest on (ODS from CSV, the unordered DWD output) are written
here: `ParquetSink` hands the batches round-robin to one writer thread per engine thread, each
writing its own `data_<n>.parquet` (zstd level 1, row groups of exactly `rows` rows except the
last), so encoding and compression use every core while the producer goes on. A few batches wait
per thread, so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

DICTIONARY_PAGE_BYTES = 64 << 10
"""Dictionary-encode a column chunk only while its dictionary stays this small: high-cardinality
strings (ids, timestamps) then fall back to plain encoding early, which writes faster and
smaller files than pyarrow's 1 MiB default; low-cardinality columns keep their dictionary."""
QUEUE_DEPTH = 1
LAYER_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "store_decimal_as_integer": True,  # INT32/INT64 as DuckDB writes decimals
    "store_schema": False,
}
"""How pyarrow writes a layer so that it reads back as DuckDB's COPY would have written it."""
"""Batches waiting per writer thread: bounds memory."""


class ParquetSink:
    """`threads` files `<prefix><n>.parquet` in `folder`; the first is written even when empty."""

    def __init__(
        self, folder: Path, schema: pa.Schema, *, rows: int, threads: int, prefix: str = "data_"
    ) -> None:
        self.writers = [
            _Writer(folder / f"{prefix}{i}.parquet", schema, rows, always=i == 0)
            for i in range(max(1, threads))
        ]
        self.sent = 0
        for writer in self.writers:
            writer.start()

    def put(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.writers[self.sent % len(self.writers)].put(batch)
            self.sent += 1

    def finish(self) -> None:
        """Write what is pending and close the files; raises a writer's error."""
        for writer in self.writers:
            writer.finish()

    def abort(self) -> None:
        """Stop every writer thread (a no-op after `finish`); the caller removes the files.

        Then give the freed Arrow buffers back to the system: the allocator keeps them otherwise,
        and the long-running service would hold a layer's worth of batches between stages."""
        for writer in self.writers:
            writer.abort()
        pa.default_memory_pool().release_unused()


class _Writer:
    """One thread writing one Parquet file from a bounded queue, in row groups of `rows`."""

    def __init__(self, path: Path, schema: pa.Schema, rows: int, *, always: bool) -> None:
        self.path = path
        self.always = always
        """Write the file even without rows (the first writer: a layer has at least one)."""
        self.schema = schema
        self.rows = rows
        self.queue: queue.Queue[pa.RecordBatch | None] = queue.Queue(QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, batch: pa.RecordBatch) -> None:
        while True:
            self._raise()
            try:
                self.queue.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.put_end()
        self.thread.join()
        self._raise()

    def put_end(self) -> None:
        while self.thread.is_alive():
            try:
                self.queue.put(None, timeout=0.1)
                return
            except queue.Full:
                continue

    def abort(self) -> None:
        """Stop the thread whatever happened (a no-op after `finish`)."""
        if self.thread.is_alive():
            self.stopped.set()
            self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        pending: list[pa.RecordBatch] = []
        held = 0
        writer: pq.ParquetWriter | None = None
        try:
            while not self.stopped.is_set():
                try:
                    batch = self.queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if batch is None:
                    break
                if writer is None:
                    writer = self._open()
                pending.append(batch)
                held += batch.num_rows
                while held >= self.rows:
                    table = pa.Table.from_batches(pending, schema=self.schema)
                    writer.write_table(table.slice(0, self.rows), row_group_size=self.rows)
                    rest = table.slice(self.rows)
                    pending, held = rest.to_batches(), rest.num_rows
            if self.stopped.is_set():
                return
            if writer is None and self.always:
                writer = self._open()  # no rows: one file with the layer's columns
            if writer is not None and pending:
                writer.write_table(pa.Table.from_batches(pending, schema=self.schema),
                                   row_group_size=self.rows)
        except BaseException as exc:  # handed to the reading thread
            self.error = exc
        finally:
            if writer is not None:
                writer.close()

    def _open(self) -> pq.ParquetWriter:
        return pq.ParquetWriter(self.path, self.schema, **LAYER_OPTIONS,
                                dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES)
