"""The tables: jobs, their events, the executor's tasks, pipelines with their ticks, webhooks
and their deliveries, and the landing manifest with the input claims of incremental runs.

Alembic migrations in `migrations/` are the only way this schema is created; a test checks that
these models and the migrations agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from app.domain.states import STOPPED_STATUSES
from app.store.types import UTCDateTime, utcnow

UNFINISHED_SQL = "status NOT IN ({})".format(
    ", ".join(f"'{s.value}'" for s in sorted(STOPPED_STATUSES)))
"""A job not yet stopped, as literal SQL: a partial index is used only for a query whose WHERE
repeats its predicate, and neither SQLite nor a generic PostgreSQL plan can prove that from
bound parameters."""


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_runnable", "status", "suspend", "next_run_at"),
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_owner_unfinished", "owner", "status", postgresql_where=text(UNFINISHED_SQL),
              sqlite_where=text(UNFINISHED_SQL)),
        Index("ix_jobs_owner_pipeline", "owner", "pipeline_name", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=200, index=True)
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    owner: str = Field(max_length=200)
    status: str = Field(max_length=32)
    suspend: bool = Field(default=False)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    results: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    conditions: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    attempt: int = Field(default=1, description="Attempt of the current stage, from 1.")
    version: int = Field(default=1, description="Optimistic-concurrency guard of every write.")
    idempotency_key: str | None = Field(default=None, max_length=200)
    request_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = _ts()
    ended_at: datetime | None = _ts()
    stage_started_at: datetime | None = _ts()
    next_run_at: datetime | None = _ts()
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_expires_at: datetime | None = _ts()
    pipeline: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True),
        description="A pipeline run's name, version, trigger, scheduled_for and parameters.")
    pipeline_id: str | None = Field(default=None, max_length=36, index=True)
    pipeline_name: str | None = Field(default=None, max_length=63)


class JobCount(SQLModel, table=True):
    """How many jobs each owner has stored: the list's total without counting them.

    Kept by triggers on jobs (migration 0007), in the transaction of every insert and delete,
    whoever makes it; a job's owner never changes."""

    __tablename__ = "job_counts"

    owner: str = Field(primary_key=True, max_length=200)
    jobs: int = Field(sa_column=Column(BigInteger, nullable=False))


class JobEvent(SQLModel, table=True):
    __tablename__ = "job_events"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True,
                                                           autoincrement=True))
    job_id: str = Field(sa_column=Column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"),
                                         nullable=False, index=True))
    event: str = Field(max_length=64)
    from_status: str | None = Field(default=None, max_length=32)
    to_status: str = Field(max_length=32)
    attempt: int = 1
    message: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ExecutorTask(SQLModel, table=True):
    """One stage of one job, as the executor runs it."""

    __tablename__ = "executor_tasks"
    __table_args__ = (Index("ix_executor_tasks_status", "status"),)

    id: str = Field(primary_key=True, max_length=36)
    job_id: str = Field(max_length=36, index=True)
    stage: str = Field(max_length=32)
    attempt: int = 1
    idempotency_key: str = Field(max_length=200, unique=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    progress: float = 0.0
    processed: int = 0
    total: int = 0
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    landing_scope: str | None = Field(
        default=None, max_length=64, description="The owner's folder under the landing directory."
    )
    parameters: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True),
        description="The run's typed parameters, {name: {type, value}}; none: no parameters.",
    )
    runner: str | None = Field(default=None, max_length=100)
    lease_expires_at: datetime | None = _ts()


class Webhook(SQLModel, table=True):
    """Where an owner wants to hear about its jobs; the secret signs every delivery."""

    __tablename__ = "webhooks"

    id: str = Field(primary_key=True, max_length=36)
    owner: str = Field(max_length=200, index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    pipeline: str | None = Field(default=None, max_length=200)
    secret: str = Field(max_length=100)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class WebhookDelivery(SQLModel, table=True):
    """One message of the outbox: written with the change it reports, sent until delivered or
    out of time. `id` is the `webhook-id` every attempt carries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: str = Field(primary_key=True, max_length=40)
    webhook_id: str = Field(sa_column=Column(String(36),
                                             ForeignKey("webhooks.id", ondelete="CASCADE"),
                                             nullable=False, index=True))
    type: str = Field(max_length=64)
    job_id: str | None = Field(default=None, max_length=36)
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=16, description="pending, delivered or failed.")
    attempts: int = 0
    last_status: int | None = Field(default=None, description="HTTP status of the last attempt.")
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    next_attempt_at: datetime | None = _ts()
    delivered_at: datetime | None = _ts()
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_expires_at: datetime | None = _ts()


class Pipeline(SQLModel, table=True):
    """A named job template of one owner; `spec` is its current version's body."""

    __tablename__ = "pipelines"
    __table_args__ = (
        UniqueConstraint("owner", "name", name="uq_pipelines_owner_name"),
        Index("ix_pipelines_due", "suspend", "next_fire_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    owner: str = Field(max_length=200)
    name: str = Field(max_length=63)
    version: int = 1
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    spec_hash: str = Field(max_length=64)
    suspend: bool = Field(default=False)
    next_fire_at: datetime | None = _ts()
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class PipelineVersion(SQLModel, table=True):
    __tablename__ = "pipeline_versions"
    __table_args__ = (UniqueConstraint("pipeline_id", "version",
                                       name="uq_pipeline_versions_pipeline_version"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True,
                                                           autoincrement=True))
    pipeline_id: str = Field(sa_column=Column(String(36), ForeignKey("pipelines.id",
                                                                     ondelete="CASCADE"),
                                              nullable=False))
    version: int
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    spec_hash: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class PipelineTick(SQLModel, table=True):
    """One schedule tick of a pipeline and what became of it.

    UNIQUE(pipeline_id, scheduled_for) is what makes a tick run exactly once: the row is written
    in the transaction that creates its job, so a second replica's insert conflicts.
    """

    __tablename__ = "pipeline_ticks"
    __table_args__ = (UniqueConstraint("pipeline_id", "scheduled_for",
                                       name="uq_pipeline_ticks_pipeline_scheduled_for"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True,
                                                           autoincrement=True))
    pipeline_id: str = Field(sa_column=Column(String(36), ForeignKey("pipelines.id",
                                                                     ondelete="CASCADE"),
                                              nullable=False))
    scheduled_for: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    trigger: str = Field(max_length=16)
    outcome: str = Field(max_length=32)
    job_id: str | None = Field(default=None, max_length=36)
    backfill_id: str | None = Field(default=None, max_length=36, index=True)
    decided_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class PipelineBackfill(SQLModel, table=True):
    __tablename__ = "pipeline_backfills"

    id: str = Field(primary_key=True, max_length=36)
    pipeline_id: str = Field(sa_column=Column(String(36), ForeignKey("pipelines.id",
                                                                     ondelete="CASCADE"),
                                              nullable=False, index=True))
    start: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    end: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    max_active: int = 2
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class LandedFileRecord(SQLModel, table=True):
    """The landing manifest: one row per (owner, path, sha256) that ever landed.

    Written by the upload route as a file lands, and by the scan a `new_files` run makes for
    files put in the folder by other means. `modified_at` (the file's mtime when it was hashed)
    lets a later scan trust the recorded digest while size and mtime are unchanged.
    """

    __tablename__ = "landed_files"
    __table_args__ = (
        UniqueConstraint("owner", "path", "sha256", name="uq_landed_files_owner_path_sha256"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True,
                                                           autoincrement=True))
    owner: str = Field(max_length=200)
    path: str = Field(sa_column=Column(String(1024), nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    modified_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    landed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class InputClaim(SQLModel, table=True):
    """A landed file taken by one run of a `new_files` pipeline.

    The row exists while the run is active and stays once it Succeeded (the file is consumed);
    a run that ends Failed or Cancelled deletes its rows in the transition's transaction.
    UNIQUE(pipeline_id, path, sha256) is what keeps two runs from ever holding the same bytes.
    """

    __tablename__ = "input_claims"
    __table_args__ = (
        UniqueConstraint("pipeline_id", "path", "sha256",
                         name="uq_input_claims_pipeline_path_sha256"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True,
                                                           autoincrement=True))
    pipeline_id: str = Field(max_length=36)
    path: str = Field(sa_column=Column(String(1024), nullable=False))
    sha256: str = Field(max_length=64)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    job_id: str = Field(max_length=36, index=True)
    claimed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
