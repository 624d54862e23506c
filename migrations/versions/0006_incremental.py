"""incremental input: the landing manifest and the input claims of new_files runs

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01 11:30:00.000000

UNIQUE(pipeline_id, path, sha256) on the claims keeps two runs of a pipeline from ever holding
the same landed bytes, whatever the replicas; a claim is inserted in the transaction that creates
its run and deleted in the one that fails or cancels it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.store.types import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "landed_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=False),
        sa.Column("landed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "path", "sha256", name="uq_landed_files_owner_path_sha256"),
    )
    op.create_table(
        "input_claims",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline_id", sa.String(length=36), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pipeline_id", "path", "sha256",
                            name="uq_input_claims_pipeline_path_sha256"),
    )
    with op.batch_alter_table("input_claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_input_claims_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("input_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_input_claims_job_id"))
    op.drop_table("input_claims")
    op.drop_table("landed_files")
