"""jobs: indexes that keep create, list and the in-flight check independent of stored jobs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:40:00.000000

* ix_jobs_owner_unfinished — a partial index of the jobs not yet stopped, by owner: the
  per-create in-flight check counts at most `max_jobs_in_flight` of its entries, however many
  jobs the owner has stored or has waiting.
* ix_jobs_owner_created gains `id`, and ix_jobs_created is new: the list's order
  (created_at DESC, id DESC) is read straight from an index, for one owner or for an admin,
  instead of sorting every matching job to return the first page.

The predicate is literal SQL (not bound parameters): SQLite uses a partial index only for a query
that repeats it, and PostgreSQL cannot prove it from parameters of a generic plan.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("status NOT IN ('Cancelled', 'Failed', 'Succeeded')")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_owner_created")
        batch_op.create_index("ix_jobs_owner_created", ["owner", "created_at", "id"],
                              unique=False)
        batch_op.create_index("ix_jobs_created", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_jobs_owner_unfinished", ["owner", "status"], unique=False,
                              postgresql_where=UNFINISHED, sqlite_where=UNFINISHED)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_owner_unfinished")
        batch_op.drop_index("ix_jobs_created")
        batch_op.drop_index("ix_jobs_owner_created")
        batch_op.create_index("ix_jobs_owner_created", ["owner", "created_at"], unique=False)
