"""Incremental input: the landed files a `new_files` run takes, and why one cannot run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.domain.errors import DomainError
from app.domain.params import JobParams


@dataclass(frozen=True)
class LandedInput:
    """A file as it is now in an owner's landing space; (path, sha256) identifies it."""

    path: str
    size: int
    sha256: str
    modified_at: datetime

    def document(self) -> dict[str, Any]:
        """Its entry in a run's `results.inputs`."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


class NoNewInput(DomainError):
    """A `new_files` run found no matching file that its pipeline has not taken already."""

    reason = "NoNewInput"

    def __init__(self, pattern: str) -> None:
        super().__init__(f"no new landed file matches {pattern!r}: every matching file was "
                         "consumed by a Succeeded run of this pipeline or is held by an active one")
        self.pattern = pattern


class InputsTaken(DomainError):
    """A retry cannot re-claim its files: another run of the pipeline took some meanwhile."""

    reason = "InputsTaken"

    def __init__(self, job_id: str, paths: list[str]) -> None:
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        super().__init__(f"job {job_id} cannot be retried: another run of its pipeline took "
                         f"its input meanwhile ({shown})")
        self.job_id = job_id
        self.paths = paths


class PipelineOnly(DomainError):
    """A plain job asked for what only a pipeline has: incremental input or a table."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def pipeline_only_fields(params: JobParams) -> None:
    """Raise PipelineOnly when plain job params use `new_files` or a layer `table`."""
    if params.source.mode == "new_files":
        raise PipelineOnly("params.source.mode", (
            "source.mode 'new_files' needs a pipeline (it takes the files no Succeeded run of "
            "the pipeline consumed); run it through /v1/pipelines/{name}/runs"))
    for layer in ("ods", "dwd", "dws", "ds"):
        if params.layers.get(layer).table is not None:
            raise PipelineOnly(f"params.layers.{layer}.table", (
                f"layers.{layer}.table needs a pipeline: a table collects the runs of one "
                "pipeline"))
