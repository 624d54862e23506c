"""A pipeline's tables in Delta Lake: commit a run's layer output once, read, time-travel.

A table lives at `<warehouse>/tables/<owner>/<pipeline>/<layer>/` (see `layout.table_dir`) and
every commit is a version. A run's commit carries the Delta app transaction `strata-<job id>`
(version 1), so the Completed step may run again after a crash, a recovery or a retry: a table
that already holds that transaction is left alone and the version that has it is reported. The
commit's metadata names the job (`strata.job_id`), which `history` reports per version.

Everything here blocks (Parquet and Delta I/O): callers run it in a worker thread. Commits to one
table from this process take a lock, so two runs of a pipeline never race each other into a
Delta conflict; between replicas Delta's own optimistic concurrency decides, and a loser fails
its Completed step, which a retry takes again.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from app.domain.params import Table
from app.store.layers import layer_files

JOB_KEY = "strata.job_id"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class TableCommitFailed(Exception):
    """The run's output cannot go into its table (a missing key column, another schema…)."""


class TableNotFound(Exception):
    def __init__(self, layer: str, detail: str = "has no table yet") -> None:
        super().__init__(f"layer {layer!r} {detail}")
        self.layer = layer


@dataclass(frozen=True)
class Committed:
    version: int
    operation: str
    replayed: bool
    """The table already held this run's commit: nothing was written again."""

    def document(self) -> dict[str, Any]:
        return {"version": self.version, "operation": self.operation}


def app_id(job_id: str) -> str:
    return f"strata-{job_id}"


def _lock(table: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(table), threading.Lock())


def _open(table: Path) -> DeltaTable | None:
    try:
        return DeltaTable(str(table))
    except TableNotFoundError:
        return None


def commit(table: Path, layer_dir: Path, spec: Table, job_id: str) -> Committed:
    """Commit the layer's Parquet output into the table, once for this job."""
    with _lock(table):
        current = _open(table)
        if current is not None and current.transaction_version(app_id(job_id)) is not None:
            return _replayed(current, job_id)
        try:
            data = ds.dataset([str(f) for f in layer_files(layer_dir)], format="parquet")
        except FileNotFoundError as exc:
            raise TableCommitFailed(f"the layer has no output to commit: {exc}") from None
        missing = [c for c in [*spec.keys, *spec.partition_by] if c not in data.schema.names]
        if missing:
            raise TableCommitFailed(f"the layer's output has no column {', '.join(missing)} "
                                    f"(columns: {', '.join(data.schema.names)})")
        properties = CommitProperties(custom_metadata={JOB_KEY: job_id},
                                      app_transactions=[Transaction(app_id(job_id), 1)])
        partition_by = spec.partition_by or None
        try:
            if current is None or spec.mode == "append":
                write_deltalake(str(table), data.scanner().to_reader(), mode="append",
                                partition_by=partition_by, commit_properties=properties)
            elif spec.mode == "merge":
                _merge(current, data.to_table(), spec.keys, properties)
            else:
                predicate = _partitions_predicate(data, spec.partition_by)
                write_deltalake(str(table), data.scanner().to_reader(), mode="overwrite",
                                predicate=predicate, partition_by=partition_by,
                                commit_properties=properties)
        except (DeltaError, pa.ArrowException, ValueError) as exc:
            raise TableCommitFailed(f"{spec.mode} into the table failed: {exc}") from None
        after = DeltaTable(str(table))
        return Committed(after.version(), _operation(after.history(1)[0]), replayed=False)


def _replayed(table: DeltaTable, job_id: str) -> Committed:
    for entry in table.history():
        if entry.get(JOB_KEY) == job_id:
            return Committed(int(entry["version"]), _operation(entry), replayed=True)
    return Committed(table.version(), "UNKNOWN", replayed=True)  # its entry was cleaned up


def _operation(entry: dict[str, Any]) -> str:
    operation = str(entry.get("operation", "UNKNOWN"))
    mode = (entry.get("operationParameters") or {}).get("mode")
    if operation == "WRITE" and mode:
        return "APPEND" if mode == "Append" else "REPLACE PARTITIONS"
    return operation


def _merge(table: DeltaTable, rows: pa.Table, keys: list[str],
           properties: CommitProperties) -> None:
    """Upsert by `keys`; of a run's own rows with one key, the last one is kept."""
    position = "__strata_position"
    numbered = rows.append_column(position, pa.array(range(rows.num_rows), pa.int64()))
    last = numbered.group_by(keys, use_threads=False).aggregate([(position, "max")])
    keep = pc.sort_indices(last.column(f"{position}_max"))
    rows = rows.take(pc.take(last.column(f"{position}_max"), keep))
    on = " AND ".join(f's."{k}" = t."{k}"' for k in keys)
    (table.merge(rows, predicate=on, source_alias="s", target_alias="t",
                 commit_properties=properties)
     .when_matched_update_all().when_not_matched_insert_all().execute())


def _partitions_predicate(data: ds.Dataset, columns: list[str]) -> str:
    """`(p = v AND q = w) OR …` over the partitions present in the run's output."""
    present = data.to_table(columns=columns).group_by(columns, use_threads=False).aggregate([])
    clauses = []
    for row in present.to_pylist():
        parts = [f'"{c}" IS NULL' if row[c] is None else f'"{c}" = {_literal(row[c])}'
                 for c in columns]
        clauses.append("(" + " AND ".join(parts) + ")")
    return " OR ".join(clauses) or "false"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return repr(value) if not isinstance(value, Decimal) else str(value)
    if isinstance(value, dt.datetime | dt.date):
        return "'" + value.isoformat() + "'"
    return "'" + str(value).replace("'", "''") + "'"


# --- reading -------------------------------------------------------------------------------


def _at(table: Path, layer: str, version: int | None) -> DeltaTable:
    try:
        return DeltaTable(str(table), version=version)
    except TableNotFoundError:
        raise TableNotFound(layer) from None
    except DeltaError as exc:
        if version is None:
            raise
        raise TableNotFound(layer, f"has no version {version}") from exc


def read(table: Path, layer: str, version: int | None, limit: int,
         offset: int) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """(column names, batches of rows `offset` … `offset + limit - 1`) at `version` (None: the
    latest). Rows are in the order of the version's data files by path, then stored order:
    the same version always pages the same way."""
    delta = _at(table, layer, version)
    dataset = delta.to_pyarrow_dataset()
    fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
    names = dataset.schema.names

    def batches() -> Iterator[pa.RecordBatch]:
        skip, left = offset, limit
        for fragment in fragments:
            if left <= 0:
                return
            rows = fragment.count_rows()
            if skip >= rows:
                skip -= rows
                continue
            part = fragment.to_table(schema=dataset.schema).slice(skip, left)
            skip = 0
            left -= part.num_rows
            yield from part.to_batches()

    return names, batches()


def history(table: Path, layer: str) -> list[dict[str, Any]]:
    """Every version, newest first: `version`, `job_id`, `operation`, `committed_at`,
    `rows_added`."""
    delta = _at(table, layer, None)
    return [{"version": int(entry["version"]), "job_id": entry.get(JOB_KEY),
             "operation": _operation(entry),
             "committed_at": dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC),
             "rows_added": _rows_added(entry)}
            for entry in delta.history()]


def _rows_added(entry: dict[str, Any]) -> int | None:
    """New rows of the commit: written rows of a write, inserted rows of a merge (its updated
    rows replace rows the table held)."""
    metrics = entry.get("operationMetrics") or {}
    value = metrics.get("num_added_rows", metrics.get("num_target_rows_inserted"))
    return int(value) if value is not None else None
