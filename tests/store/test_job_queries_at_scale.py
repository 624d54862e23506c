"""The per-request job queries read a bounded number of index entries, however many jobs are
stored: the in-flight count of a create, the idempotency lookup, the list's page and its total.

The plans are read with the planner's choice of a sequential scan turned off on PostgreSQL (on a
test-sized table it would rightly prefer one): what is checked is that the index can serve the
query — that the partial index's predicate is proven from the query — and serves it alone.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col

from app.domain.states import JobStatus
from app.store import jobs as store
from app.store.models import Job

STATUSES = [s.value for s in JobStatus]


def job_row(owner: str, status: str, n: int, key: str | None = None) -> dict[str, Any]:
    created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    return {"id": str(uuid.uuid4()), "name": f"j{n}", "owner": owner, "status": status,
            "suspend": True, "params": {}, "results": {}, "conditions": [], "attempt": 1,
            "version": 1, "idempotency_key": key, "created_at": created, "updated_at": created}


async def store_jobs(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(Job), rows)


async def plan(engine: AsyncEngine, query: Select[Any]) -> str:
    """The plan of `query` with its values inlined, as one string."""
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE jobs"))  # the visibility map autovacuum keeps
            await conn.execute(text("SET enable_seqscan = off"))
            await conn.execute(text("SET enable_bitmapscan = off"))
            rows = (await conn.execute(text("EXPLAIN " + sql))).all()
        else:
            rows = (await conn.execute(text("EXPLAIN QUERY PLAN " + sql))).all()
    return "\n".join(str(r[-1]) for r in rows)


async def test_in_flight_counts_the_owners_unfinished_jobs_up_to_the_limit(
    db_engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rows = [job_row("alice", status, i) for i, status in enumerate(STATUSES * 3)]
    rows += [job_row("bob", JobStatus.PENDING.value, 100 + i) for i in range(5)]
    await store_jobs(db_engine, rows)
    unfinished = 3 * (len(STATUSES) - 3)  # all but Succeeded, Failed and Cancelled
    async with sessions() as session:
        assert await store.count_in_flight(session, "alice", 100) == unfinished
        assert await store.count_in_flight(session, "alice", 4) == 4
        assert await store.count_in_flight(session, "bob", 100) == 5
        assert await store.count_in_flight(session, "carol", 100) == 0


async def test_the_in_flight_count_reads_only_the_partial_index(db_engine: AsyncEngine) -> None:
    await store_jobs(db_engine, [job_row(f"o{i % 3}", STATUSES[i % len(STATUSES)], i)
                                 for i in range(60)])
    shown = await plan(db_engine, store.in_flight_query("o1", 100))
    assert "ix_jobs_owner_unfinished" in shown
    if db_engine.dialect.name == "postgresql":
        assert "Index Only Scan" in shown and "Limit" in shown
    else:
        assert "COVERING INDEX ix_jobs_owner_unfinished" in shown


async def test_the_list_page_comes_in_index_order_without_a_sort(db_engine: AsyncEngine) -> None:
    await store_jobs(db_engine, [job_row(f"o{i % 3}", "Succeeded", i) for i in range(60)])
    for owner, index in (("o1", "ix_jobs_owner_created"), (None, "ix_jobs_created")):
        shown = await plan(db_engine, store.list_query(owner=owner, status=None, name=None,
                                                       pipeline=None).limit(50))
        assert index in shown
        assert "TEMP B-TREE" not in shown and "Sort" not in shown


async def test_the_idempotency_lookup_is_one_index_probe(db_engine: AsyncEngine) -> None:
    await store_jobs(db_engine, [job_row("o1", "Succeeded", i, key=f"k{i}") for i in range(60)])
    shown = await plan(db_engine, store.idempotency_query("o1", "k7"))
    if db_engine.dialect.name == "postgresql":
        assert "Index Scan using uq_jobs_owner_idempotency_key" in shown
    else:
        assert "(owner=? AND idempotency_key=?)" in shown


async def test_the_stored_totals_follow_every_insert_and_delete_whoever_makes_them(
    db_engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rows = [job_row(f"o{i % 3}", STATUSES[i % len(STATUSES)], i) for i in range(30)]
    await store_jobs(db_engine, rows)
    async with db_engine.begin() as conn:  # as the scheduler's history limit does, in bulk
        await conn.execute(delete(Job).where(col(Job.id).in_([r["id"] for r in rows[:7]])))
    async with sessions() as session:
        for owner in ("o0", "o1", "o2", None, "nobody"):
            counted = select(func.count()).select_from(Job)
            if owner is not None:
                counted = counted.where(col(Job.owner) == owner)
            expected = (await session.execute(counted)).scalar_one()
            assert await store.count_stored(session, owner) == expected
        total, _ = await store.list_jobs(session, owner="o1", status=None, name=None, limit=5,
                                         offset=0)
        assert total == await store.count_stored(session, "o1") > 0
