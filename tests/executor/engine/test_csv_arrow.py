"""The plain CSV ODS stage is read by pyarrow (`csv_arrow`) and is exactly what DuckDB reads.

Each case runs the same stage twice on the same files: once as the engine runs it (pyarrow where
it may) and once with the pyarrow path switched off (DuckDB's `read_csv`), and compares the rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pytest

from app.domain.states import Stage
from app.executor.engine import csv_arrow
from app.executor.engine.base import CancelToken, StageCancelled, StageFailed
from tests.executor.engine.stages import (
    StageRunner,
    csv_params,
    duckdb_engine,
    read_layer,
    tree,
    write_csv,
)

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[StageRunner]:
    """The fresh path only: pyarrow reads the landing files on a fresh database; small landing
    files on the shared database are read by DuckDB's reader (`test_shared_database`)."""
    landing = tmp_path / "landing"
    warehouse = tmp_path / "warehouse"
    landing.mkdir()
    warehouse.mkdir()
    engine = duckdb_engine("fresh")
    yield StageRunner(landing.resolve(), warehouse.resolve(), engine)
    engine.close()

TRICKY = (
    'id,text,note\r\n'
    '1,"a, comma","quoted ""quotes"""\r\n'
    '2,"a\nnewline",\r\n'
    '3,"",plain\r\n'  # a quoted empty field is NULL, as in DuckDB (allow_quoted_nulls)
    '4,  spaces  ,"ünïcödé ✓"\r\n'
    '5,N/A,NULL\r\n'
)


class Spy:
    """Records the files the pyarrow path opens, and whether it wrote the layer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[Path] = []
        self.wrote = 0
        real_open, real_write = pacsv.open_csv, csv_arrow.write_ods

        def open_csv(path: Any, *args: Any, **kw: Any) -> Any:
            self.opened.append(Path(path))
            return real_open(path, *args, **kw)

        def write_ods(**kw: Any) -> int:
            self.wrote += 1
            return real_write(**kw)

        monkeypatch.setattr(csv_arrow.pacsv, "open_csv", open_csv)
        monkeypatch.setattr(csv_arrow, "write_ods", write_ods)


def ods_rows(runner: StageRunner, params: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    runner.run(params, Stage.LANDING_TO_ODS, job_id=job_id)
    rows = read_layer(runner.layer_dir("ods", job_id)).to_pylist()
    for row in rows:
        del row["_ingested_at"]
    return sorted(rows, key=lambda r: (r["_source_file"], r["_row_number"]))


def both_ways(
    runner: StageRunner, monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Spy]:
    spy = Spy(monkeypatch)
    arrow = ods_rows(runner, params, "arrow")
    with monkeypatch.context() as m:
        m.setattr(csv_arrow, "eligible", lambda *a: False)
        duck = ods_rows(runner, params, "duckdb")
    return arrow, duck, spy


def test_pyarrow_reads_quotes_newlines_and_empty_fields_as_duckdb_does(
    runner: StageRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    (runner.landing / "in").mkdir()
    (runner.landing / "in" / "a.csv").write_bytes(TRICKY.encode())
    (runner.landing / "in" / "b.csv").write_text("id,text,note\n6,x,\n")

    arrow, duck, spy = both_ways(runner, monkeypatch, csv_params())

    assert spy.wrote == 1
    assert arrow == duck
    assert [r["text"] for r in arrow] == ["a, comma", "a\nnewline", None, "  spaces  ", "N/A", "x"]
    assert arrow[0]["note"] == 'quoted "quotes"' and arrow[1]["note"] is None


def test_pyarrow_takes_the_delimiter_duckdb_sniffs(
    runner: StageRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    (runner.landing / "in").mkdir()
    (runner.landing / "in" / "a.csv").write_text("k;v\na;1,5\nb;\n")

    arrow, duck, spy = both_ways(runner, monkeypatch, csv_params())

    assert spy.wrote == 1
    assert arrow == duck
    assert [(r["k"], r["v"]) for r in arrow] == [("a", "1,5"), ("b", None)]


@pytest.mark.parametrize(
    ("header", "options"),
    [
        ("k,k,v", {}),  # DuckDB renames a duplicate column: its reader decides
        ("k,v", {"nullstr": "NA"}),  # an option pyarrow is not given
        ("k,v", {"header": False}),
    ],
)
def test_anything_else_stays_on_duckdbs_reader(
    runner: StageRunner, monkeypatch: pytest.MonkeyPatch, header: str, options: dict[str, Any]
) -> None:
    (runner.landing / "in").mkdir()
    width = len(header.split(","))
    (runner.landing / "in" / "a.csv").write_text(header + "\n" + ",".join(["NA"] * width) + "\n")
    params = csv_params()
    params["source"]["options"].update(options)

    arrow, duck, spy = both_ways(runner, monkeypatch, params)

    assert spy.wrote == 0
    assert arrow == duck


def test_files_of_different_columns_stay_on_duckdbs_reader(
    runner: StageRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(runner.landing / "in" / "a.csv", ["k", "v"], [["a", "1"]])
    write_csv(runner.landing / "in" / "b.csv", ["v", "k", "w"], [["2", "b", "x"]])

    arrow, duck, spy = both_ways(runner, monkeypatch, csv_params())

    assert spy.wrote == 0
    assert arrow == duck


def test_pyarrow_opens_only_the_resolved_landing_inputs(
    runner: StageRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_csv(runner.landing / "data" / "a.csv", ["k"], [["a"]])
    write_csv(tmp_path / "outside" / "b.csv", ["k"], [["secret"]])
    (runner.landing / "in").mkdir()
    (runner.landing / "in" / "a.csv").symlink_to(runner.landing / "data" / "a.csv")
    spy = Spy(monkeypatch)

    runner.run(csv_params(), Stage.LANDING_TO_ODS)

    assert spy.wrote == 1
    assert set(spy.opened) == {runner.landing / "data" / "a.csv"}
    (runner.landing / "in" / "b.csv").symlink_to(tmp_path / "outside" / "b.csv")
    with pytest.raises(StageFailed, match="points outside the landing directory"):
        runner.run(csv_params(), Stage.LANDING_TO_ODS, job_id="job-2")
    assert all(p.is_relative_to(runner.landing) for p in spy.opened)


def test_a_ragged_row_fails_the_stage_without_absolute_paths(runner: StageRunner) -> None:
    lines = ["k,v"] + [f"{i},x" for i in range(50_000)] + ["1,2,3"]
    (runner.landing / "in").mkdir()
    (runner.landing / "in" / "a.csv").write_text("\n".join(lines) + "\n")

    with pytest.raises(StageFailed) as failed:
        runner.run(csv_params(), Stage.LANDING_TO_ODS)

    assert str(runner.landing) not in str(failed.value)
    assert not runner.layer_dir("ods").exists()


def test_cancel_stops_the_pyarrow_reader_between_batches(
    runner: StageRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_arrow, "BLOCK_BYTES", 1 << 16)
    write_csv(runner.landing / "in" / "a.csv", ["k", "v"], [[i, "x" * 20] for i in range(50_000)])
    before = tree(runner.warehouse)
    cancel = CancelToken()
    batches: list[int] = []
    spy = Spy(monkeypatch)

    def progress(_: Any) -> None:
        batches.append(1)
        if len(batches) == 2:  # the reader is past its first batches: cancel from another thread
            threading.Thread(target=cancel.cancel).start()

    request = runner.request(csv_params(), Stage.LANDING_TO_ODS)
    with pytest.raises(StageCancelled):
        runner.engine.run_stage(request, progress, cancel)

    assert spy.wrote == 1
    assert len(batches) < 20  # 50,000 rows are about 30 batches of 64 KiB
    assert tree(runner.warehouse) == before | {"job-1"}
