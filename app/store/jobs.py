"""Every query on jobs and job events. Writes to a job are guarded by its version column."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from app.domain.errors import ConcurrentUpdate
from app.domain.states import RUNNABLE_STATUSES
from app.store import webhooks
from app.store.models import UNFINISHED_SQL, Job, JobCount, JobEvent, Webhook

# Columns the version guard protects; the lease columns are the claim's business, not the job's.
_STATE_COLUMNS = (
    "name", "description", "status", "suspend", "params", "results", "conditions", "attempt",
    "updated_at", "started_at", "ended_at", "stage_started_at", "next_run_at",
)


async def insert_job(session: AsyncSession, job: Job, event: JobEvent) -> None:
    session.add(job)
    await session.flush()
    await add_events(session, [event])


JobRow = Row[Any]
"""A job read for display only: the same attributes as `Job`, without the ORM's bookkeeping."""

_JOBS = Job.__table__  # type: ignore[attr-defined]
_EVENTS = JobEvent.__table__  # type: ignore[attr-defined]
_WEBHOOKS = Webhook.__table__  # type: ignore[attr-defined]
_EVENT_COLUMNS = ("job_id", "event", "from_status", "to_status", "attempt", "message", "at")


async def read_job(conn: AsyncConnection, job_id: str, owner: str | None = None) -> JobRow | None:
    """The job as a plain row: a third of the CPU of loading the ORM object, for the hot GET."""
    query = select(_JOBS).where(_JOBS.c.id == job_id)
    if owner is not None:
        query = query.where(_JOBS.c.owner == owner)
    return (await conn.execute(query)).first()


async def get_job(session: AsyncSession, job_id: str, owner: str | None = None) -> Job | None:
    query = select(Job).where(col(Job.id) == job_id)
    if owner is not None:
        query = query.where(col(Job.owner) == owner)
    return (await session.execute(query)).scalars().first()


def idempotency_query(owner: str, key: str) -> Select[Job]:
    """One probe of the unique (owner, idempotency_key) index."""
    return select(Job).where(col(Job.owner) == owner, col(Job.idempotency_key) == key)


async def find_by_idempotency_key(session: AsyncSession, owner: str, key: str) -> Job | None:
    return (await session.execute(idempotency_query(owner, key))).scalars().first()


def list_query(
    *, owner: str | None, status: str | None, name: str | None, pipeline: str | None
) -> Select[Job]:
    """Jobs newest first; without filters beyond the owner the order is read from
    ix_jobs_owner_created (ix_jobs_created for an admin), so a page stops after its rows."""
    query = select(Job)
    if pipeline is not None:
        query = query.where(col(Job.pipeline_name) == pipeline)
    if owner is not None:
        query = query.where(col(Job.owner) == owner)
    if status is not None:
        query = query.where(col(Job.status) == status)
    if name is not None:
        query = query.where(col(Job.name) == name)
    return query.order_by(col(Job.created_at).desc(), col(Job.id).desc())


async def count_stored(session: AsyncSession, owner: str | None) -> int:
    """The owner's stored jobs (all of them for None), read from job_counts, which triggers
    keep: counting them would cost a read of every one of them on every list."""
    query = select(func.coalesce(func.sum(col(JobCount.jobs)), 0))
    if owner is not None:
        query = query.where(col(JobCount.owner) == owner)
    return int((await session.execute(query)).scalar_one())


async def list_jobs(
    session: AsyncSession,
    *,
    owner: str | None,
    status: str | None,
    name: str | None,
    limit: int,
    offset: int,
    pipeline: str | None = None,
) -> tuple[int, list[Job]]:
    query = list_query(owner=owner, status=status, name=name, pipeline=pipeline)
    if status is None and name is None and pipeline is None:
        total = await count_stored(session, owner)
    else:
        counted = select(func.count()).select_from(Job)
        if query.whereclause is not None:
            counted = counted.where(query.whereclause)
        total = (await session.execute(counted)).scalar_one()
    page = (await session.execute(query.limit(limit).offset(offset))).scalars().all()
    return int(total), list(page)


def _state_params() -> list[Any]:
    """The bound parameters `p_<column>` of the state columns, typed as their columns."""
    return [bindparam(f"p_{name}", type_=_JOBS.c[name].type) for name in _STATE_COLUMNS]


def _state_values(job: Job) -> dict[str, Any]:
    """The job's state columns as values of `_state_params`."""
    return {f"p_{name}": getattr(job, name) for name in _STATE_COLUMNS}


def _guarded_update() -> Any:
    """The version-guarded UPDATE of `save_job`, built once: building the statement (its
    columns, comparisons and subquery) cost as much CPU as running it."""
    return (
        update(_JOBS)
        .where(_JOBS.c.id == bindparam("p_id"), _JOBS.c.version == bindparam("p_version"))
        .values({
            **dict(zip(_STATE_COLUMNS, _state_params(), strict=True)),
            "version": bindparam("p_version") + 1,
        })
        .returning(exists().where(_WEBHOOKS.c.owner == _JOBS.c.owner))
    )


_GUARDED_UPDATE = _guarded_update()


async def save_job(session: AsyncSession, job: Job, expected_version: int) -> bool:
    """Write the job's state if nobody changed it since `expected_version`; bump the version.

    Returns whether the job's owner has a webhook, read by the same statement: a transition
    then needs the outbox lookup (`add_events(hooks=...)`), and most owners have none.
    """
    conn = await session.connection()  # Core: the ORM's bulk-update bookkeeping is not needed
    row = (await conn.execute(
        _GUARDED_UPDATE, {**_state_values(job), "p_id": job.id, "p_version": expected_version}
    )).first()
    if row is None:
        raise ConcurrentUpdate(job.id)
    job.version = expected_version + 1
    return bool(row[0])


@cache
def _save_at_once_statement(events: int) -> Any:
    """`save_at_once`'s statement for this many event rows (PostgreSQL: data-modifying CTEs)."""
    sets = ", ".join(f"{name} = :p_{name}" for name in _STATE_COLUMNS)
    rows = ", ".join(
        f"(:e{i}_event, :e{i}_from_status, :e{i}_to_status, :e{i}_attempt, :e{i}_message, "
        f":e{i}_at)" for i in range(events)
    )
    logged = (
        ", logged AS (INSERT INTO job_events (job_id, event, from_status, to_status, attempt, "
        f"message, at) SELECT saved.id, e.* FROM saved, (VALUES {rows}) AS e(event, "
        "from_status, to_status, attempt, message, at))"
    ) if events else ""
    statement = text(
        "WITH hooked AS (SELECT EXISTS (SELECT 1 FROM webhooks WHERE owner = :p_owner) AS yes), "
        f"saved AS (UPDATE jobs SET {sets}, version = :p_version + 1 "
        "WHERE id = :p_id AND version = :p_version AND NOT (SELECT yes FROM hooked) "
        f"RETURNING id){logged} "
        "SELECT (SELECT count(*) FROM saved) AS saved, (SELECT yes FROM hooked) AS hooked"
    )
    event_types = {
        "event": _EVENTS.c.event.type, "from_status": _EVENTS.c.from_status.type,
        "to_status": _EVENTS.c.to_status.type, "attempt": _EVENTS.c.attempt.type,
        "message": _EVENTS.c.message.type, "at": _EVENTS.c.at.type,
    }
    return statement.bindparams(
        *_state_params(),
        bindparam("p_id", type_=_JOBS.c.id.type), bindparam("p_owner", type_=_JOBS.c.owner.type),
        bindparam("p_version", type_=_JOBS.c.version.type),
        *(bindparam(f"e{i}_{name}", type_=kind)
          for i in range(events) for name, kind in event_types.items()),
    )


async def save_at_once(session: AsyncSession, job: Job, events: Sequence[JobEvent]) -> bool:
    """PostgreSQL: the version-guarded UPDATE and the event rows in one statement, on an
    autocommit connection — one round trip where a transaction takes four (BEGIN, UPDATE,
    INSERT, COMMIT). It writes only when the owner has no webhook, since the outbox's messages
    are built from the job in the same transaction; False then, and nothing is written (the
    caller saves in a transaction instead). Raises ConcurrentUpdate like `save_job`."""
    values = {**_state_values(job), "p_id": job.id, "p_owner": job.owner,
              "p_version": job.version}
    for i, event in enumerate(events):
        values.update({f"e{i}_{name}": getattr(event, name) for name in _EVENT_COLUMNS[1:]})
    conn = await session.connection()
    row = (await conn.execute(_save_at_once_statement(len(events)), values)).one()
    if row.hooked:
        return False
    if row.saved != 1:
        raise ConcurrentUpdate(job.id)
    job.version += 1
    return True


async def add_events(
    session: AsyncSession, events: Iterable[JobEvent], *, hooks: bool = True
) -> None:
    """Store a change's event rows, and in the same transaction the webhook messages they
    report (the outbox): every transition passes here, whatever caused it. `hooks=False`: the
    caller knows the owner has no webhook (`save_job` said so), so there is nothing to queue."""
    rows = list(events)
    if rows:  # Core: the rows' generated ids are never read back
        conn = await session.connection()
        await conn.execute(insert(_EVENTS), [
            {column: getattr(event, column) for column in _EVENT_COLUMNS} for event in rows
        ])
    if hooks:
        await webhooks.enqueue_for_events(session, rows)


async def list_events(session: AsyncSession, job_id: str) -> list[JobEvent]:
    query = select(JobEvent).where(col(JobEvent.job_id) == job_id).order_by(col(JobEvent.id))
    return list((await session.execute(query)).scalars().all())


async def delete_job(session: AsyncSession, job: Job) -> None:
    await session.delete(job)
    await session.flush()


def _runnable(now: Any) -> tuple[Any, ...]:
    return (
        col(Job.status).in_(sorted(RUNNABLE_STATUSES)),
        col(Job.suspend).is_(False),
        or_(col(Job.next_run_at).is_(None), col(Job.next_run_at) <= now),
    )


def _lease_free(owner: Any, now: Any) -> Any:
    return or_(
        col(Job.lease_expires_at).is_(None),
        col(Job.lease_expires_at) < now,
        col(Job.lease_owner) == owner,
    )


async def claim_runnable(
    session: AsyncSession, *, owner: str, now: datetime, lease_seconds: float, limit: int,
    only: Sequence[str] | None = None,
) -> list[Job]:
    """Lease up to `limit` runnable jobs to `owner` in one statement, and return them.

    On PostgreSQL the candidates are locked with FOR UPDATE SKIP LOCKED, so replicas never claim the
    same job; SQLite serialises writers, which gives the same guarantee. The candidate predicates
    are repeated in the UPDATE so that, where the engine ignores the row locks (SQLite), a job
    another replica claimed, or a user cancelled, in between is not taken.
    """
    values: dict[str, Any] = {
        "c_owner": owner, "c_now": now, "c_limit": limit,
        "c_until": now + timedelta(seconds=lease_seconds),
    }
    if only is not None:
        values["c_only"] = list(only)
    rows = (await session.execute(_claim_statement(only is not None), values)).scalars().all()
    return sorted(rows, key=lambda job: job.updated_at)


@cache
def _claim_statement(only: bool) -> Any:
    """The claim, built once per shape with bound parameters: the watcher claims at every hop,
    and building the statement cost as much CPU as running it."""
    now = bindparam("c_now", type_=_JOBS.c.updated_at.type)
    owner: Any = bindparam("c_owner")
    candidates = (
        select(col(Job.id))
        .where(*_runnable(now), _lease_free(owner, now))
        .order_by(col(Job.updated_at))
        .limit(bindparam("c_limit"))
        .with_for_update(skip_locked=True)
    )
    if only:
        candidates = candidates.where(col(Job.id).in_(bindparam("c_only", expanding=True)))
    until = bindparam("c_until", type_=_JOBS.c.lease_expires_at.type)
    return (
        update(Job)
        .where(col(Job.id).in_(candidates.scalar_subquery()), *_runnable(now),
               _lease_free(owner, now))
        .values(lease_owner=owner, lease_expires_at=until)
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


async def release_owner_leases(session: AsyncSession, *, owner: str) -> None:
    """Hand back every lease `owner` holds, so another replica can take the jobs at once."""
    await session.execute(
        update(Job)
        .where(col(Job.lease_owner) == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


async def count_events_since_last(
    session: AsyncSession, job_id: str, event: str, resets: Sequence[str]
) -> int:
    """How many `event` rows the job has since its last event of a kind in `resets`."""
    last_reset = (
        select(func.coalesce(func.max(JobEvent.id), 0))
        .where(col(JobEvent.job_id) == job_id, col(JobEvent.event).in_(resets))
        .scalar_subquery()
    )
    query = select(func.count()).select_from(JobEvent).where(
        col(JobEvent.job_id) == job_id, col(JobEvent.event) == event, col(JobEvent.id) > last_reset
    )
    return int((await session.execute(query)).scalar_one())


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    query = select(col(Job.status), func.count()).group_by(col(Job.status))
    return {status: int(n) for status, n in (await session.execute(query)).all()}


def in_flight_query(owner: str, limit: int) -> Select[int]:
    """How many jobs of `owner` are not yet stopped, counted up to `limit`: the partial index
    ix_jobs_owner_unfinished alone serves it, reading at most `limit` entries."""
    unfinished = (
        select(literal_column("1")).select_from(Job)
        .where(col(Job.owner) == owner, text(UNFINISHED_SQL))
        .limit(limit).subquery()
    )
    return select(func.count()).select_from(unfinished)


async def count_in_flight(session: AsyncSession, owner: str, limit: int) -> int:
    """Jobs of `owner` not yet stopped (the ones that use the service's capacity), up to `limit`:
    a create costs the same with ten or ten thousand of the owner's jobs stored or waiting."""
    return int((await session.execute(in_flight_query(owner, limit))).scalar_one())
