"""What a stage reads: the rules both engines share (they call the same functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.domain.params import Source
from app.executor.engine.base import StageFailed
from app.executor.engine.inputs import landing_inputs, layer_inputs
from tests.executor.engine.stages import write_csv

CSV = Source.model_validate({"path": "in/*.csv", "format": "csv"})


@pytest.mark.parametrize("name", ["a*b.csv", "a?b.csv", "a[1].csv", "a{b}.csv", "a\\b.csv"])
def test_a_landing_file_whose_name_a_reader_could_take_for_a_glob_is_refused(
    tmp_path: Path, name: str
) -> None:
    write_csv(tmp_path / "in" / name, ["id"], [[1]])
    with pytest.raises(StageFailed, match="glob characters") as caught:
        landing_inputs(tmp_path, CSV, [])
    assert f"'in/{name}'" in str(caught.value)


def test_landing_files_are_in_relative_path_order_with_an_estimate(tmp_path: Path) -> None:
    for name in ("b.csv", "a.csv"):
        write_csv(tmp_path / "in" / name, ["id"], [[i] for i in range(10)])
    inputs = landing_inputs(tmp_path, CSV, [])
    assert inputs.names == ["in/a.csv", "in/b.csv"]
    assert inputs.files == [tmp_path / "in" / "a.csv", tmp_path / "in" / "b.csv"]
    assert (inputs.total, inputs.exact) == (20, False)


def test_a_layer_file_that_links_outside_the_job_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.parquet"
    outside.write_bytes(b"PAR1")
    ods = tmp_path / "warehouse" / "job-1" / "ods"
    ods.mkdir(parents=True)
    (ods / "part-00000.parquet").symlink_to(outside)
    with pytest.raises(StageFailed, match="input layer 'ods' holds a foreign file; refused"):
        layer_inputs(tmp_path / "warehouse", "job-1", "ods", [])
