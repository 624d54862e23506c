"""A dry run's sample: LandingToODS reads the first N source rows, by file name then line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.domain.states import Stage
from app.executor.engine.base import StageFailed
from tests.executor.engine.stages import StageRunner, csv_params, rows_of, write_csv


def lineage(folder: Path) -> list[tuple[str, int, str]]:
    """(file, line, id) of every ODS row, sorted: the sample is a set, its order checked apart."""
    return sorted((r["_source_file"], r["_row_number"], r["id"]) for r in rows_of(folder))


def write_three_files(landing: Path) -> None:
    # written out of name order, so the name order is not the creation order
    write_csv(landing / "in" / "c.csv", ["id"], [["c1"], ["c2"]])
    write_csv(landing / "in" / "a.csv", ["id"], [["a1"], ["a2"], ["a3"]])
    write_csv(landing / "in" / "b.csv", ["id"], [["b1"], ["b2"], ["b3"], ["b4"]])


@pytest.mark.parametrize(("sample", "expected"), [
    (1, [("in/a.csv", 1, "a1")]),
    (3, [("in/a.csv", 1, "a1"), ("in/a.csv", 2, "a2"), ("in/a.csv", 3, "a3")]),
    (5, [("in/a.csv", 1, "a1"), ("in/a.csv", 2, "a2"), ("in/a.csv", 3, "a3"),
         ("in/b.csv", 1, "b1"), ("in/b.csv", 2, "b2")]),
])
def test_the_sample_is_the_first_rows_in_file_name_then_line_order(
    runner: StageRunner, no_leftovers: None, sample: int, expected: list[tuple[str, int, str]],
) -> None:
    write_three_files(runner.landing)
    result = runner.run(csv_params(), Stage.LANDING_TO_ODS, sample_rows=sample)
    assert result.rows == len(expected)
    assert lineage(runner.layer_dir("ods")) == expected


def test_a_sample_larger_than_the_source_reads_it_all(runner: StageRunner) -> None:
    write_three_files(runner.landing)
    assert runner.run(csv_params(), Stage.LANDING_TO_ODS, sample_rows=10_000).rows == 9


def test_only_landing_is_sampled_and_later_layers_read_their_input_whole(
    runner: StageRunner,
) -> None:
    write_three_files(runner.landing)
    params = csv_params(dwd={"sql": "SELECT id FROM ods WHERE id LIKE 'b%'"})
    runner.run(params, Stage.LANDING_TO_ODS, sample_rows=6)
    assert runner.run(params, Stage.ODS_TO_DWD, sample_rows=1).rows == 3


def test_jsonl_is_sampled_by_line(runner: StageRunner) -> None:
    for name, ids in (("b.jsonl", ["b1", "b2"]), ("a.jsonl", ["a1", "a2"])):
        path = runner.landing / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))
    params = {"source": {"path": "in/*.jsonl", "format": "jsonl"}, "layers": {}}
    runner.run(params, Stage.LANDING_TO_ODS, sample_rows=3)
    assert lineage(runner.layer_dir("ods")) == [
        ("in/a.jsonl", 1, "a1"), ("in/a.jsonl", 2, "a2"), ("in/b.jsonl", 1, "b1")]


def test_parquet_is_sampled_by_file_then_row(runner: StageRunner) -> None:
    folder = runner.landing / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["b1", "b2", "b3"]}), folder / "b.parquet")
    pq.write_table(pa.table({"id": ["a1", "a2"]}), folder / "a.parquet")
    pq.write_table(pa.table({"id": ["c1"]}), folder / "c.parquet")
    params = {"source": {"path": "in/*.parquet", "format": "parquet"}, "layers": {}}
    result = runner.run(params, Stage.LANDING_TO_ODS, sample_rows=3)
    assert result.rows == 3
    assert lineage(runner.layer_dir("ods")) == [
        ("in/a.parquet", 1, "a1"), ("in/a.parquet", 2, "a2"), ("in/b.parquet", 1, "b1")]


def test_a_sample_of_no_rows_is_refused(runner: StageRunner) -> None:
    write_three_files(runner.landing)
    with pytest.raises(StageFailed, match="sample_rows"):
        runner.run(csv_params(), Stage.LANDING_TO_ODS, sample_rows=0)
