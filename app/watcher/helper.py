"""Timeouts, idempotency keys, retry backoff and defaults for the watcher."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from app.domain.params import JobParams
from app.store.models import Job

BACKOFF_CAP_SECONDS = 300.0


def task_key(job_id: str, stage: str, attempt: int) -> str:
    """The deterministic idempotency key of a stage attempt.

    A crash between creating a task and saving its id re-sends the same key, and the executor
    answers with the task it already has instead of starting a second one.
    """
    return f"{job_id}:{stage}:{attempt}"


def backoff_seconds(failures: int, base: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter in [delay/2, delay]: base, 2·base, 4·base, …"""
    if base <= 0:
        return 0.0
    delay = min(base * 2 ** max(failures - 1, 0), BACKOFF_CAP_SECONDS)
    return delay / 2 + (rng or random).random() * delay / 2


def params_of(job: Job) -> JobParams:
    return JobParams.model_validate(job.params)


def timeout_reason(job: Job, params: JobParams, now: datetime) -> str | None:
    """Why the job or its current stage is out of time, or None."""
    if job.started_at and now > job.started_at + timedelta(seconds=params.timeout_seconds):
        return f"job exceeded timeout_seconds={params.timeout_seconds}"
    if job.stage_started_at and now > job.stage_started_at + timedelta(
        seconds=params.stage_timeout_seconds
    ):
        return f"stage {job.status} exceeded stage_timeout_seconds={params.stage_timeout_seconds}"
    return None
