"""Publishing a stage: a layer folder that exists is replaced without a moment of absence.

Both engines publish through `publish`; a reader (the data service, the next stage) that looks at
the layer path while a re-run finishes must always find a complete layer, old or new.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.domain.states import Stage
from app.executor.engine.publish import publish, publish_stage
from tests.executor.engine.stages import (
    StageRunner,
    csv_params,
    reader_of,
    rows_of,
    watch_publishing,
    write_csv,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="atomic exchange is renameat2 (Linux)"
)


def _folder(path: Path, marker: str) -> Path:
    path.mkdir(parents=True)
    (path / "part-00000.parquet").write_text(marker)
    return path


@linux_only
def test_replacing_a_folder_never_removes_it_at_any_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file-system step publish takes leaves the destination in place."""
    dest = _folder(tmp_path / "job" / "ds", "old")
    work = tmp_path / "job" / ".tmp-ds-1"
    new = _folder(work / "out", "new")
    absent = watch_publishing(monkeypatch, dest)
    publish(new, dest, work)
    assert absent == []
    assert (dest / "part-00000.parquet").read_text() == "new"
    assert not new.exists()  # the old folder, swapped into `new`, is gone


def test_publishing_into_an_empty_place_renames(tmp_path: Path) -> None:
    work = tmp_path / ".tmp-ods-1"
    new = _folder(work / "out", "new")
    publish(new, tmp_path / "ods", work)
    assert (tmp_path / "ods" / "part-00000.parquet").read_text() == "new"


def test_a_stage_without_checks_removes_stale_rejects(tmp_path: Path) -> None:
    work = tmp_path / ".tmp-dwd-1"
    _folder(work / "out", "rows")
    stale = _folder(tmp_path / "dwd_rejects", "stale")
    files = publish_stage(
        work=work,
        out=work / "out",
        layer_dir=tmp_path / "dwd",
        rejects_out=None,
        rejects_dir=stale,
        name_parts=lambda folder: len(list(folder.iterdir())),
    )
    assert files == 1
    assert not stale.exists()
    assert (tmp_path / "dwd" / "part-00000.parquet").read_text() == "rows"


@linux_only
def test_a_duckdb_rerun_never_leaves_a_moment_without_the_layer(
    runner: StageRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(runner.landing / "in" / "a.csv", ["id"], [[i] for i in range(2000)])
    params = csv_params(ods={})
    runner.run(params, Stage.LANDING_TO_ODS)
    layer = runner.layer_dir("ods")
    absent = watch_publishing(monkeypatch, layer)
    with reader_of(layer) as misses:
        runner.run(params, Stage.LANDING_TO_ODS)
    assert absent == [] and misses == []
    assert len(rows_of(layer)) == 2000
