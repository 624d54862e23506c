"""Small stages on one locked DuckDB database per process, instead of a fresh database each.

Creating a DuckDB database costs about 12 ms of CPU (its catalog of built-in functions), more
than a 20-row stage's whole work. A fresh database per stage is what the file sandbox needs:
`allowed_paths`, `allowed_directories`, `enable_external_access` and `lock_configuration` are
database-wide and cannot be undone once locked. A stage whose input is a few Parquet files of
the same job can do without DuckDB touching any file at all, so it runs on a database that can
reach no file whatever (`enable_external_access = false` with nothing allowed, then
`lock_configuration = true`), created once and shared:

* **Reading.** pyarrow reads the input layer's Parquet files (in file order, as `read_parquet`
  does) and the stage's own connection (`cursor()`, a connection of its own to the shared
  database) registers the table under the input's name. A registered name, a temp table and a
  running query belong to that connection only; closing it at the end of the stage drops them.
* **Writing.** DuckDB cannot write a file here, so the result is fetched as Arrow and written by
  `pyarrow.parquet` with the layers' settings (zstd level 1, row groups of `batch_size`). Every
  reader sees the same columns, types and values; what differs is Parquet metadata: DuckDB marks
  a column REQUIRED where its statistics prove it holds no NULL, and pyarrow, writing from an
  Arrow result that carries no such proof, writes every column OPTIONAL.
* **Same layer as the fresh path.** Only column types that both ways read and write alike are
  taken (`ARROW_SAFE`, `DUCKDB_SAFE`: checked type by type, the same DuckDB types and values
  read back); any other input or result type runs the stage on a fresh database.
* **Memory.** The shared database has the per-stage `memory_limit` for all the small stages
  together and no spill folder; a stage that needs more memory, or whose result would exceed
  `MAX_RESULT_BYTES` as Arrow, is run again on a fresh database with its own limit and spill
  folder (`FreshDatabaseNeeded`). So a small stage never fails for memory where a fresh
  database would have succeeded. Arrow inputs live outside DuckDB's limit, bounded by
  `SMALL_INPUT_BYTES` per running stage.
* **Progress and cancel.** `interrupt()` stops only the stage's own connection. DuckDB's
  progress bar is a per-connection setting that cannot be set database-wide nor after the lock,
  so `query_progress()` says nothing on these connections: a small stage reports progress per
  statement (its bands), not within one.
* **Isolation.** User SQL that passed `SqlGuard` is one SELECT and cannot change the catalog; in
  case something slips through, each stage's connection checks before it closes that the shared
  catalog still holds no table, view, sequence or attached database, and the database is
  discarded (the stage fails as a sandbox violation) otherwise.

**Landing files** (CSV, JSONL, Parquet, with the lineage columns) keep DuckDB's own readers: their
sniffing, types and lineage are DuckDB's and would not be the same through pyarrow. When the
resolved landing files of a stage hold at most `small_input_bytes` together, a *landing reader*
reads them: a database per landing folder (the service has one; and per threads and memory limit),
created once, that can reach the files under that folder and nothing else (`allowed_directories`,
no other external access, no spill folder), then locked. It runs nothing but the engine's own read
statement of the stage's files (`_create_input`: the option keys are the reader's known ones,
values quoted, paths quoted literals of the resolved inputs), the very statement a fresh database
runs, so sniffing, types, values, lineage, the dry-run cut and the error of a bad file or option
are the same. Its rows come over as Arrow (only `DUCKDB_SAFE` types, within `MAX_RESULT_BYTES`) and
are registered as `landing` on the stage's connection of the shared database, where the user's SQL,
checks and dedupe run: user SQL never runs on a database that can reach a file. Anything else
(another type, a source column that clashes with a lineage name, too large, out of memory) runs the
stage on a fresh database, as above. A landing read costs a CSV sniff and an Arrow copy of the
rows, far less than a database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from duckdb.sqltypes import DuckDBPyType

from app.executor.engine.arrow_parquet import LAYER_OPTIONS
from app.executor.engine.base import SandboxViolation
from app.executor.engine.sandbox import lock_connection, open_connection

log = logging.getLogger(__name__)

SMALL_INPUT_BYTES = 2 * 1024**2
"""Input layers up to this many Parquet bytes run on the shared database (about 130,000 rows of
the orders job's ODS; its 1M-row ODS is 15 MiB): past a few MiB the fixed cost saved is noise
next to the work, and the fresh path writes unordered layers in parallel."""
MAX_READERS = 8
"""Landing readers kept per process (each a DuckDB database of a few MiB, created in ~15 ms);
a service whose owners land in more folders than this creates the others again as needed."""
MAX_RESULT_BYTES = 64 * 1024**2
"""A result larger than this as Arrow (held in memory before it is written) goes to the fresh
path, which streams it into the Parquet writer within its memory limit."""

# DuckDB result types that DuckDB's Parquet writer and pyarrow's write alike (same DuckDB type
# and values when read back); a nested type is safe when its children are.
DUCKDB_SAFE = frozenset({
    "boolean", "tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint", "uinteger",
    "ubigint", "float", "double", "decimal", "varchar", "blob", "date", "time", "timestamp",
    "timestamp_ns", "timestamp with time zone",
})
_NESTED = frozenset({"list", "struct", "map"})


class FreshDatabaseNeeded(Exception):
    """The stage cannot run on the shared database (memory, result size); run it on a fresh one."""


def arrow_safe(kind: pa.DataType) -> bool:
    """An input column type that DuckDB reads the same from Arrow as from the Parquet file."""
    t = pa.types
    if t.is_boolean(kind) or t.is_integer(kind) or t.is_floating(kind) or t.is_decimal(kind):
        return not t.is_float16(kind)
    if t.is_string(kind) or t.is_large_string(kind) or t.is_binary(kind) or t.is_date32(kind):
        return True
    if t.is_timestamp(kind):
        return kind.unit in ("us", "ns")  # read_parquet gives TIMESTAMP for ms and s
    if t.is_time64(kind):
        return kind.unit == "us"
    if t.is_list(kind) or t.is_large_list(kind):
        return arrow_safe(kind.value_type)
    if t.is_struct(kind):
        return all(arrow_safe(kind.field(i).type) for i in range(kind.num_fields))
    if t.is_map(kind):
        return arrow_safe(kind.key_type) and arrow_safe(kind.item_type)
    return False


def duckdb_safe(kind: DuckDBPyType) -> bool:
    """A result column type that pyarrow writes as DuckDB's COPY would (see `DUCKDB_SAFE`)."""
    name = str(kind.id)
    if name in _NESTED:
        children = [child for _, child in kind.children]
        return all(isinstance(child, DuckDBPyType) and duckdb_safe(child) for child in children)
    # an alias names a type of its own over the same id (JSON is a VARCHAR): not taken
    return name in DUCKDB_SAFE and str(kind).lower().startswith(name)


def read_small_input(files: Sequence[Path], limit: int) -> pa.Table | None:
    """The input layer as one Arrow table, or None when it is too big or has another type."""
    try:
        if sum(path.stat().st_size for path in files) > limit:
            return None
        schema = pq.read_schema(files[0])
        if not all(arrow_safe(field.type) for field in schema):
            return None
        # ParquetFile.read: a sixth of read_table's fixed cost (no dataset discovery)
        tables = [pq.ParquetFile(path).read(use_threads=False) for path in files]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    except (OSError, pa.ArrowException):
        return None  # the fresh path reads it again and reports what is wrong


def fetch_result(
    relation: duckdb.DuckDBPyRelation, *, batch_size: int, max_bytes: int
) -> pa.Table:
    """A query's rows as Arrow, when every column type round-trips (`duckdb_safe`) and they
    fit in `max_bytes`; `FreshDatabaseNeeded` otherwise."""
    if not all(duckdb_safe(kind) for kind in relation.types):
        raise FreshDatabaseNeeded("a result column type pyarrow would write differently")
    reader = relation.to_arrow_reader(batch_size)
    batches = []
    size = 0
    with reader:  # closed early too, so the connection can run its next statement
        for batch in duckdb_batches(reader):
            size += batch.nbytes
            if size > max_bytes:
                raise FreshDatabaseNeeded("the result is too large for the shared database")
            batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def duckdb_batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The batches of a DuckDB query's Arrow stream, with an error the query raises midway
    raised as DuckDB's own (`_duckdb_error`), so every caller reports it as a statement's."""
    try:
        yield from reader
    except OSError as exc:
        raise _duckdb_error(exc) from None


def _duckdb_error(exc: OSError) -> duckdb.Error:
    """An error of a query that failed while its Arrow stream was read (a bad CSV row past the
    sniffed lines, a failed cast): pyarrow hands DuckDB's message on, unchanged, as an OSError;
    as a DuckDB error again it is reported as on a fresh database (and out of memory moves the
    stage to one)."""
    message = str(exc)
    if message.startswith("Out of Memory Error"):
        return duckdb.OutOfMemoryException(message)
    return duckdb.Error(message)


def write_result(
    relation: duckdb.DuckDBPyRelation, path: Path, *, batch_size: int, max_bytes: int
) -> int:
    """Write a query's rows as one Parquet file the way DuckDB's COPY writes a layer."""
    table = fetch_result(relation, batch_size=batch_size, max_bytes=max_bytes)
    if table.num_rows == 0:  # DuckDB writes no row group for no rows
        with pq.ParquetWriter(path, table.schema, **LAYER_OPTIONS):
            pass
    else:
        pq.write_table(table, path, row_group_size=max(1, batch_size), **LAYER_OPTIONS)
    return table.num_rows


class SharedDatabase:
    """The locked in-memory databases of this process, one per (threads, memory limit): the
    shared databases that reach no file, and the landing readers that reach one landing folder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._databases: dict[_Key, duckdb.DuckDBPyConnection] = {}
        self.connections = 0
        """Connections handed out so far (stages that started on the shared database)."""
        self.reads = 0
        """Landing reads handed out so far (landing stages that read through a reader)."""

    def connect(self, *, threads: int, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
        """A new connection of the shared database (created, configured and locked on first use)."""
        with self._lock:
            self.connections += 1
        return self._cursor(_key(threads, memory_limit, None))

    def reader(
        self, landing_dir: Path, *, threads: int, memory_limit: str | None
    ) -> duckdb.DuckDBPyConnection:
        """A new connection of the landing reader of `landing_dir`: a database that can reach
        the files under that folder only, for the engine's own read statement of the landing
        files; user SQL never runs on it. Close it with `con.close()`."""
        with self._lock:
            self.reads += 1
        return self._cursor(_key(threads, memory_limit, landing_dir))

    def _cursor(self, key: _Key) -> duckdb.DuckDBPyConnection:
        with self._lock:
            database = self._databases.pop(key, None)  # put back last: the most recently used
            if database is None:
                threads, memory_limit, landing_dir = key
                database = open_connection(
                    threads=threads,
                    memory_limit=memory_limit,
                    temp_directory=None,
                    preserve_insertion_order=True,
                    allowed_paths=(),
                    allowed_directories=() if landing_dir is None else (landing_dir,),
                )
                lock_connection(database)
            self._databases[key] = database
            self._forget_idle_readers()
            return database.cursor()

    def _forget_idle_readers(self) -> None:
        """Keep at most `MAX_READERS` landing readers (one per landing folder, so per owner):
        the least recently used are dropped, not closed — a read still running on one keeps it
        alive, and it is freed when that read's connection closes."""
        readers = [key for key in self._databases if key[2] is not None]
        for key in readers[: max(0, len(readers) - MAX_READERS)]:
            del self._databases[key]

    def release(self, con: duckdb.DuckDBPyConnection, *, threads: int, memory_limit: str | None,
                check: bool = True) -> None:
        """Close a stage's connection (dropping its registrations and temp tables), checking
        first that the shared catalog is still empty; a database that is not is discarded."""
        try:
            if check:
                leftovers = _shared_objects(con)
                if leftovers:
                    self._discard(_key(threads, memory_limit, None))
                    raise SandboxViolation(
                        "the stage changed the shared catalog "
                        f"({', '.join(leftovers[:3])}); refused"
                    )
        finally:
            con.close()

    def close(self) -> None:
        with self._lock:
            databases, self._databases = list(self._databases.values()), {}
        for database in databases:
            database.close()

    def _discard(self, key: _Key) -> None:
        with self._lock:
            database = self._databases.pop(key, None)
        if database is not None:
            log.error("shared DuckDB database discarded: a stage changed its catalog")
            database.close()


_Key = tuple[int, str | None, Path | None]


def _key(threads: int, memory_limit: str | None, landing_dir: Path | None) -> _Key:
    return (max(1, int(threads)), memory_limit, landing_dir)


_SHARED_OBJECTS = """
SELECT 'database ' || database_name FROM duckdb_databases()
    WHERE NOT internal AND database_name NOT IN ('memory', 'temp', 'system')
UNION ALL SELECT 'table ' || table_name FROM duckdb_tables() WHERE NOT temporary AND NOT internal
UNION ALL SELECT 'view ' || view_name FROM duckdb_views() WHERE NOT temporary AND NOT internal
UNION ALL SELECT 'sequence ' || sequence_name FROM duckdb_sequences() WHERE NOT temporary
"""


def _shared_objects(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows: Iterable[tuple[str]] = con.execute(_SHARED_OBJECTS).fetchall()
    return [str(row[0]) for row in rows]
