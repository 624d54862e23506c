"""Where a job's data lives in the warehouse: the one place that spells the layout.

    <warehouse>/<job_id>/<layer>/            a finished layer (Parquet files part-NNNNN)
    <warehouse>/<job_id>/<layer>_rejects/    the rows that layer's checks refused
    <warehouse>/<job_id>/.tmp-<layer>-<token>/  a running stage's scratch folder
    <warehouse>/tables/<owner>/<pipeline>/<layer>/  a pipeline's table (Delta Lake)

Engines, the watcher and the data service all ask this module, so a change of layout is one edit.
"""

from __future__ import annotations

import re
from pathlib import Path

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TMP_PREFIX = ".tmp-"
TABLES = "tables"


def is_safe_job_id(job_id: str) -> bool:
    """A job id names a folder under the warehouse: it must not be able to leave it."""
    return bool(_JOB_ID.fullmatch(job_id)) and job_id not in (".", "..")


def job_dir(warehouse: Path, job_id: str) -> Path:
    return warehouse / job_id


def table_dir(warehouse: Path, owner: str, pipeline: str, layer: str) -> Path:
    """A pipeline's table of one layer: `<warehouse>/tables/<owner>/<pipeline>/<layer>/`."""
    return warehouse / TABLES / owner / pipeline / layer


def layer_dir(warehouse: Path, job_id: str, layer: str) -> Path:
    return job_dir(warehouse, job_id) / layer


def rejects_dir(warehouse: Path, job_id: str, layer: str) -> Path:
    return job_dir(warehouse, job_id) / f"{layer}_rejects"


def work_dir(warehouse: Path, job_id: str, layer: str, token: str) -> Path:
    """A running stage's scratch folder; renamed into place or removed when the stage ends."""
    return job_dir(warehouse, job_id) / f"{TMP_PREFIX}{layer}-{token}"
