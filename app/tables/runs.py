"""The Completed step's part in pipeline tables: commit each table layer of a run, off the loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from app.domain import layout
from app.domain.params import JobParams
from app.domain.states import STAGES
from app.store.models import Job
from app.tables import delta
from app.tables.delta import TableCommitFailed

log = logging.getLogger("strata.tables")

__all__ = ["TableCommitFailed", "commit_tables"]


async def commit_tables(warehouse: Path, job: Job) -> dict[str, Any]:
    """Commit the run's table layers in stage order; `{layer: {"version", "operation"}}`.

    Once per run: a layer whose table already holds this job's commit is reported, not written
    again, so the step is safe to repeat after a crash or a retry. A plain job has no tables."""
    if job.pipeline_id is None or not job.pipeline_name:
        return {}
    params = JobParams.model_validate(job.params)
    done: dict[str, Any] = {}
    for stage in STAGES:
        spec = params.layers.get(stage.layer).table
        if spec is None:
            continue
        table = layout.table_dir(warehouse, job.owner, job.pipeline_name, stage.layer)
        output = layout.layer_dir(warehouse, job.id, stage.layer)
        try:
            committed = await asyncio.to_thread(delta.commit, table, output, spec, job.id)
        except TableCommitFailed as exc:
            raise TableCommitFailed(f"table {stage.layer}: {exc}") from None
        if committed.replayed:
            log.info("job %s: table %s already holds its commit (version %d)", job.id,
                     stage.layer, committed.version)
        done[stage.layer] = committed.document()
    return done
