"""jobs: indexes that keep create, list and the in-flight check independent of stored jobs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:40:00.000000

* ix_jobs_owner_unfinished — a partial index of the jobs not yet stopped, by owner: the
  per-create in-flight check counts at most `max_jobs_in_flight` of its entries, however many
  jobs the owner has stored or has waiting.
* job_counts — each owner's number of stored jobs, kept by triggers on every insert and delete
  of a job in the same transaction: the list's total without a filter is read, not counted.
  On SQLite a later migration that recreates the jobs table (batch "move and copy") drops these
  triggers with it and must create them again.
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


_SQLITE_TRIGGERS = (
    """CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_counts (owner, jobs) VALUES (NEW.owner, 1)
        ON CONFLICT (owner) DO UPDATE SET jobs = jobs + 1;
    END""",
    """CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_counts SET jobs = jobs - 1 WHERE owner = OLD.owner;
    END""",
)
_POSTGRES_TRIGGERS = (
    """CREATE FUNCTION jobs_count() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO job_counts (owner, jobs) VALUES (NEW.owner, 1)
            ON CONFLICT (owner) DO UPDATE SET jobs = job_counts.jobs + 1;
        ELSE
            UPDATE job_counts SET jobs = jobs - 1 WHERE owner = OLD.owner;
        END IF;
        RETURN NULL;
    END $$""",
    # deferred to the commit: the owner's count row is locked only while the transaction
    # commits, so concurrent creates of one owner do not queue behind each other's whole work
    """CREATE CONSTRAINT TRIGGER jobs_count AFTER INSERT OR DELETE ON jobs
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION jobs_count()""",
)


def upgrade() -> None:
    op.create_table(
        "job_counts",
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("owner"),
    )
    op.execute("INSERT INTO job_counts (owner, jobs) SELECT owner, count(*) FROM jobs "
               "GROUP BY owner")
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _POSTGRES_TRIGGERS if postgres else _SQLITE_TRIGGERS:
        op.execute(statement)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_owner_created")
        batch_op.create_index("ix_jobs_owner_created", ["owner", "created_at", "id"],
                              unique=False)
        batch_op.create_index("ix_jobs_created", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_jobs_owner_unfinished", ["owner", "status"], unique=False,
                              postgresql_where=UNFINISHED, sqlite_where=UNFINISHED)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER jobs_count ON jobs")
        op.execute("DROP FUNCTION jobs_count()")
    else:
        op.execute("DROP TRIGGER jobs_count_insert")
        op.execute("DROP TRIGGER jobs_count_delete")
    op.drop_table("job_counts")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_owner_unfinished")
        batch_op.drop_index("ix_jobs_created")
        batch_op.drop_index("ix_jobs_owner_created")
        batch_op.create_index("ix_jobs_owner_created", ["owner", "created_at"], unique=False)
