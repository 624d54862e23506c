"""Running single stages of the DuckDB engine on real files, and reading what they wrote."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.engine import publish
from app.executor.engine.base import CancelToken, LayerResult, Progress, StageRequest
from app.executor.engine.duckdb_engine import DuckDBEngine

DATABASE_PATHS = ("shared", "fresh")
"""The DuckDB engine's two ways to run a stage: small inputs on the shared locked database, the
rest on a fresh database per stage. Tests that must hold for both are parametrised over these."""


def duckdb_engine(path: str = "shared") -> DuckDBEngine:
    """The engine taking `path` for every stage it can ("fresh": never the shared database)."""
    return DuckDBEngine(small_input_bytes=0) if path == "fresh" else DuckDBEngine()


@dataclass
class StageRunner:
    """Runs stages of one job with the DuckDB engine on real files under tmp_path."""

    landing: Path
    warehouse: Path
    engine: DuckDBEngine = field(default_factory=DuckDBEngine)
    reports: list[Progress] = field(default_factory=list)

    def request(
        self, params: JobParams | dict[str, Any], stage: Stage, job_id: str = "job-1", **kw: Any
    ) -> StageRequest:
        if isinstance(params, dict):
            params = JobParams.model_validate(params)
        return StageRequest(
            job_id=job_id,
            stage=stage,
            params=params,
            landing_dir=self.landing,
            warehouse_dir=self.warehouse,
            **kw,
        )

    def run(
        self,
        params: JobParams | dict[str, Any],
        stage: Stage,
        job_id: str = "job-1",
        cancel: CancelToken | None = None,
        **kw: Any,
    ) -> LayerResult:
        self.reports.clear()
        return self.engine.run_stage(
            self.request(params, stage, job_id, **kw), self.reports.append, cancel or CancelToken()
        )

    def run_all(
        self,
        params: JobParams | dict[str, Any],
        upto: Stage = Stage.DWS_TO_DS,
        job_id: str = "job-1",
    ) -> dict[str, LayerResult]:
        results = {}
        for stage in Stage:
            results[stage.layer] = self.run(params, stage, job_id)
            if stage is upto:
                break
        return results

    def layer_dir(self, layer: str, job_id: str = "job-1") -> Path:
        return self.warehouse / job_id / layer


def read_layer(folder: Path) -> pa.Table:
    """A layer's rows in stored order (files in name order)."""
    files = sorted(folder.glob("*.parquet"))
    assert files, f"no Parquet files in {folder}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def rows_of(folder: Path) -> list[dict[str, Any]]:
    return read_layer(folder).to_pylist()


def tree(root: Path) -> set[str]:
    """Every file and folder under root, relative (to compare before and after a stage)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    lines += [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def csv_params(path: str = "in/*.csv", **layers: Any) -> dict[str, Any]:
    return {
        "source": {"path": path, "format": "csv", "options": {"header": True, "all_varchar": True}},
        "layers": layers,
        "batch_size": 1000,
    }


def watch_publishing(monkeypatch: pytest.MonkeyPatch, layer: Path) -> list[str]:
    """Check after every rename `publish` makes that `layer` still exists; lists the misses.

    Deterministic where a reader thread is not: a replace done as two renames leaves the layer
    absent after the first, and this sees it every time.
    """
    absent: list[str] = []
    real_rename = os.rename

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_rename(src, dst)
        if not layer.is_dir():
            absent.append(f"after rename {src} -> {dst}")

    monkeypatch.setattr(publish.os, "rename", rename)
    return absent


@contextmanager
def reader_of(layer: Path) -> Iterator[list[int]]:
    """A thread looking for `layer` in a loop while the block runs; yields the misses it saw."""
    stop = threading.Event()
    misses: list[int] = []
    looks = [0]

    def look() -> None:
        while not stop.is_set():
            looks[0] += 1
            if not layer.is_dir():
                misses.append(looks[0])

    thread = threading.Thread(target=look, name="layer-reader")
    thread.start()
    try:
        yield misses
    finally:
        stop.set()
        thread.join()
    assert looks[0] > 0, "the reader never looked"
