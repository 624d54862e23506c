"""pipelines: versioned job templates, their ticks and backfills

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01 10:19:08.786191

A job made from a pipeline records it (`jobs.pipeline`, `pipeline_id`, `pipeline_name`);
UNIQUE(pipeline_id, scheduled_for) on the ticks makes each tick run exactly once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.store.types import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("suspend", sa.Boolean(), nullable=False),
        sa.Column("next_fire_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "name", name="uq_pipelines_owner_name"),
    )
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.create_index("ix_pipelines_due", ["suspend", "next_fire_at"], unique=False)

    op.create_table(
        "pipeline_backfills",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("start", UTCDateTime(), nullable=False),
        sa.Column("end", UTCDateTime(), nullable=False),
        sa.Column("max_active", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pipeline_backfills", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pipeline_backfills_pipeline_id"), ["pipeline_id"], unique=False
        )

    op.create_table(
        "pipeline_ticks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("backfill_id", sa.String(length=36), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "pipeline_id", "scheduled_for", name="uq_pipeline_ticks_pipeline_scheduled_for"
        ),
    )
    with op.batch_alter_table("pipeline_ticks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pipeline_ticks_backfill_id"), ["backfill_id"], unique=False
        )

    op.create_table(
        "pipeline_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pipeline_id", "version", name="uq_pipeline_versions_pipeline_version"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pipeline", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("pipeline_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("pipeline_name", sa.String(length=63), nullable=True))
        batch_op.create_index(
            "ix_jobs_owner_pipeline", ["owner", "pipeline_name", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_jobs_pipeline_id"), ["pipeline_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_pipeline_id"))
        batch_op.drop_index("ix_jobs_owner_pipeline")
        batch_op.drop_column("pipeline_name")
        batch_op.drop_column("pipeline_id")
        batch_op.drop_column("pipeline")

    op.drop_table("pipeline_versions")
    with op.batch_alter_table("pipeline_ticks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_ticks_backfill_id"))

    op.drop_table("pipeline_ticks")
    with op.batch_alter_table("pipeline_backfills", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_backfills_pipeline_id"))

    op.drop_table("pipeline_backfills")
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_index("ix_pipelines_due")

    op.drop_table("pipelines")
