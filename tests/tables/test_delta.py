"""Pipeline tables on real Delta Lake files: each mode against a plain-Python model of the same
runs, time travel, and a run committed once however often its Completed step runs."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from app.domain.params import Table
from app.tables import delta

Row = dict[str, Any]
DAYS = [dt.date(2026, 1, d) for d in range(1, 5)]


def runs_of(seed: int, count: int = 6) -> list[list[Row]]:
    """Runs of random rows; keys repeat across runs and within one run."""
    rng = random.Random(seed)
    return [[{"day": rng.choice(DAYS), "device": f"d{rng.randrange(8)}",
              "value": rng.randrange(100), "run": run}
             for _ in range(rng.randrange(1, 12))] for run in range(count)]


def write_layer(folder: Path, rows: list[Row]) -> Path:
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("day", pa.date32()), ("device", pa.string()), ("value", pa.int64()), ("run", pa.int64())]))
    half = len(rows) // 2  # two part files, as an engine writes them
    pq.write_table(table.slice(0, half), folder / "part-00000.parquet")
    pq.write_table(table.slice(half), folder / "part-00001.parquet")
    return folder


def read_all(table: Path, version: int | None = None) -> list[Row]:
    names, batches = delta.read(table, "ds", version, 1_000_000, 0)
    assert names == ["day", "device", "value", "run"]  # the layer's columns, in order
    return [row for batch in batches for row in batch.to_pylist()]


def model(mode: str, runs: list[list[Row]]) -> list[list[Row]]:
    """The table after each run, computed without Delta."""
    state: list[Row] = []
    after = []
    for rows in runs:
        if mode == "append":
            state = state + rows
        elif mode == "merge":
            by_key = {(r["device"],): r for r in state}
            for row in rows:  # the later row wins, within a run and across runs
                by_key[(row["device"],)] = row
            state = list(by_key.values())
        else:
            days = {r["day"] for r in rows}
            state = [r for r in state if r["day"] not in days] + rows
        after.append(state)
    return after


def key(row: Row) -> tuple[Any, ...]:
    return (row["day"], row["device"], row["value"], row["run"])


SPECS = {
    "append": Table(mode="append"),
    "merge": Table(mode="merge", keys=["device"]),
    "replace_partitions": Table(mode="replace_partitions", partition_by=["day"]),
}


@pytest.mark.parametrize("mode", sorted(SPECS))
@pytest.mark.parametrize("seed", [1, 2])
def test_each_mode_equals_a_plain_python_model_at_every_version(
    tmp_path: Path, mode: str, seed: int,
) -> None:
    runs = runs_of(seed)
    table = tmp_path / "tables" / "t"
    for n, rows in enumerate(runs):
        committed = delta.commit(table, write_layer(tmp_path / f"job{n}" / "ds", rows),
                                 SPECS[mode], f"job-{n}")
        assert (committed.version, committed.replayed) == (n, False)
    expected = model(mode, runs)
    assert sorted(map(key, read_all(table))) == sorted(map(key, expected[-1]))
    for version, state in enumerate(expected):  # time travel
        assert sorted(map(key, read_all(table, version))) == sorted(map(key, state))
    history = delta.history(table, "ds")
    assert [h["version"] for h in history] == list(reversed(range(len(runs))))
    assert [h["job_id"] for h in history] == [f"job-{n}" for n in reversed(range(len(runs)))]


@pytest.mark.parametrize("mode", sorted(SPECS))
def test_a_run_is_committed_once_however_often_its_completed_step_runs(
    tmp_path: Path, mode: str,
) -> None:
    runs = runs_of(3, count=2)
    table = tmp_path / "t"
    first = write_layer(tmp_path / "a" / "ds", runs[0])
    second = write_layer(tmp_path / "b" / "ds", runs[1])
    delta.commit(table, first, SPECS[mode], "job-a")
    done = delta.commit(table, second, SPECS[mode], "job-b")
    # a crash after the commit and before the transition: the step runs again, twice
    for _ in range(2):
        again = delta.commit(table, second, SPECS[mode], "job-b")
        assert (again.version, again.replayed) == (done.version, True)
    assert DeltaTable(str(table)).version() == 1
    assert sorted(map(key, read_all(table))) == sorted(map(key, model(mode, runs)[-1]))


def test_paging_is_stable_and_covers_every_row_once(tmp_path: Path) -> None:
    table = tmp_path / "t"
    runs = runs_of(4)
    for n, rows in enumerate(runs):
        delta.commit(table, write_layer(tmp_path / f"j{n}" / "ds", rows), SPECS["append"], f"{n}")
    whole = read_all(table)
    pages: list[Row] = []
    for offset in range(0, len(whole) + 5, 5):
        _, batches = delta.read(table, "ds", None, 5, offset)
        pages += [row for batch in batches for row in batch.to_pylist()]
    assert pages == whole == read_all(table)


def test_a_missing_key_column_or_table_or_version_is_named(tmp_path: Path) -> None:
    layer = write_layer(tmp_path / "j" / "ds", runs_of(5)[0])
    with pytest.raises(delta.TableCommitFailed, match="no column region"):
        delta.commit(tmp_path / "t", layer, Table(mode="merge", keys=["region"]), "j")
    with pytest.raises(delta.TableNotFound):
        delta.read(tmp_path / "t", "ds", None, 10, 0)
    delta.commit(tmp_path / "t", layer, SPECS["append"], "j")
    with pytest.raises(delta.TableNotFound, match="no version 7"):
        delta.read(tmp_path / "t", "ds", 7, 10, 0)


def test_a_table_mode_names_what_it_needs() -> None:
    with pytest.raises(ValueError, match="merge' needs keys"):
        Table(mode="merge")
    with pytest.raises(ValueError, match="needs partition_by"):
        Table(mode="replace_partitions")
