"""Looking inside a run: any layer's rows, and the rows its checks rejected.

Owner-scoped through the job service (another owner's job is a 404, like every job endpoint).
A layer is served once its folder holds Parquet files: engines publish a layer by renaming it
into place, so a folder that is there is complete. Rejects are served whenever the folder of
rejects is there — also after the stage failed a gate, since they explain the failure — and a
written layer without checks has none to serve: an empty result, not an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from app.domain import layout
from app.domain.errors import LayerNotWritten
from app.services.jobs import JobService
from app.store import layers

RowFormat = Literal["json", "csv"]


async def layer_rows(
    jobs: JobService, owner: str | None, job_id: str, layer: str, *,
    fmt: RowFormat, limit: int, offset: int, rejects: bool = False,
) -> Iterator[bytes]:
    """The rows of a job's layer (or its rejects) as streamed JSON or CSV."""
    job = await jobs.get(owner, job_id)
    warehouse = jobs.warehouse()
    written = layout.layer_dir(warehouse, job.id, layer)
    folder = layout.rejects_dir(warehouse, job.id, layer) if rejects else written
    try:
        return layers.iter_rows(folder, fmt, limit, offset)
    except FileNotFoundError:
        pass
    if rejects and (folder.is_dir() or _holds_parquet(written)):
        return iter([layers.empty_document(fmt)])
    raise LayerNotWritten(job.id, layer, job.status,
                          what="the rejects of layer" if rejects else "layer")


def _holds_parquet(folder: Path) -> bool:
    try:
        layers.layer_files(folder)
    except FileNotFoundError:
        return False
    return True
