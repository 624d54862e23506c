"""A job's document as every reader sees it, built straight from the stored row.

The API serves it, the webhook outbox sends it: one mapping, kept where both can import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from app.domain.conditions import Condition
from app.domain.fsm import allowed_actions
from app.store.models import Job

if TYPE_CHECKING:  # store.jobs writes events through the outbox, which renders documents
    from app.store.job_reader import StoredJob
    from app.store.jobs import JobRow

_CONDITIONS: TypeAdapter[list[Condition]] = TypeAdapter(list[Condition])


def job_document(job: Job | JobRow | StoredJob) -> dict[str, Any]:
    """A `JobPublic` document straight from the stored job, for the hot read paths.

    The params were validated into `JobParams` and dumped when the job was written, so reading
    them back through the model on every GET only burns CPU; validating this document as a
    `JobPublic` and dumping it gives it back unchanged (a test keeps it so).
    """
    return {
        "job_id": job.id, "name": job.name, "description": job.description,
        "owner": job.owner, "status": job.status, "suspend": job.suspend,
        "allowed_actions": list(allowed_actions(job.status, job.suspend)),
        "params": job.params, "results": job.results,
        "conditions": _CONDITIONS.validate_python(job.conditions),
        "attempt": job.attempt, "created_at": job.created_at, "updated_at": job.updated_at,
        "started_at": job.started_at, "ended_at": job.ended_at,
        "pipeline": job.pipeline,
    }
