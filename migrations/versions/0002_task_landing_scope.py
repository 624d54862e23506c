"""executor tasks remember the owner landing scope

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 13:13:31.397235
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executor_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("landing_scope", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executor_tasks", schema=None) as batch_op:
        batch_op.drop_column("landing_scope")
