"""Every query on `executor_tasks`: create, read, claim, lease, progress, finish, cancel, recover.

Each method is one transaction. Writes that race — a claim, a lease renewal, a finish, a cancel —
are single conditional UPDATEs, so they are atomic on PostgreSQL and on SQLite alike (SQLite drops
`FOR UPDATE SKIP LOCKED`, and several executor replicas may share one PostgreSQL).

A task is *held* by a runner while its status is `processing`, `runner` names it and the lease
has not lapsed. A task in `created`/`processing` whose lease lapsed (or never existed) is
*orphaned*: any runner may claim it and run it again from its inputs.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.contract.tasks import ACTIVE_STATUSES, TaskCreate, TaskStatus
from app.store.db import read_retrying, transaction
from app.store.models import ExecutorTask
from app.store.notify import notify_column
from app.store.types import utcnow

_ACTIVE = sorted(ACTIVE_STATUSES)


def _claimable(runner: Any, now: Any) -> Any:
    """Nobody holds it: never leased, lease lapsed, or it is already ours."""
    return or_(
        col(ExecutorTask.runner).is_(None),
        col(ExecutorTask.lease_expires_at).is_(None),
        col(ExecutorTask.lease_expires_at) < now,
        col(ExecutorTask.runner) == runner,
    )


def _held_by(runner: Any) -> Any:
    return and_(
        col(ExecutorTask.runner) == runner,
        col(ExecutorTask.status) == TaskStatus.PROCESSING.value,
    )


_TASKS = ExecutorTask.__table__  # type: ignore[attr-defined]
_TASK_COLUMNS = tuple(column.name for column in _TASKS.columns)
_INSERT_TASK = insert(_TASKS)


@cache
def _claim_statement() -> Any:
    """`claim`'s UPDATE, built once with bound parameters (building it per claim cost as much
    CPU as running it): the task, unfinished and held by nobody else, taken by the runner."""
    now = bindparam("p_now", type_=_TASKS.c.started_at.type)
    runner: Any = bindparam("p_runner")
    return (
        update(ExecutorTask)
        .where(
            col(ExecutorTask.id) == bindparam("p_task_id"),
            col(ExecutorTask.status).in_(_ACTIVE),
            _claimable(runner, now),
        )
        .values(
            runner=runner, lease_expires_at=bindparam("p_until", type_=_TASKS.c.started_at.type),
            status=TaskStatus.PROCESSING.value, started_at=now, updated_at=now,
            progress=0.0, processed=0, total=0,
        )
        .returning(ExecutorTask)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


@cache
def _finish_statement(wake: bool) -> Any:
    """`finish`'s UPDATE, built once (building it cost as much CPU as running it): the end of
    a run, written only while the runner holds the task. A NULL progress keeps the stored one.
    `wake`: it also sends the wake-up (`notify_column`; PostgreSQL)."""
    task = _TASKS
    kept = {
        name: func.coalesce(bindparam(f"p_{name}", type_=task.c[name].type), task.c[name])
        for name in ("progress", "processed", "total")
    }
    returning = (ExecutorTask, notify_column(col(ExecutorTask.job_id))) if wake else (
        ExecutorTask,)
    return (
        update(ExecutorTask)
        .where(col(ExecutorTask.id) == bindparam("p_task_id"), _held_by(bindparam("p_runner")))
        .values(
            status=bindparam("p_status"), result=bindparam("p_result", type_=task.c.result.type),
            error=bindparam("p_error"), lease_expires_at=None, **kept,
            finished_at=bindparam("p_finished_at", type_=task.c.finished_at.type),
            updated_at=bindparam("p_updated_at", type_=task.c.updated_at.type),
        )
        .returning(*returning)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


class TaskStore:
    """The executor's repository; hands out detached `ExecutorTask` rows."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.sessions = sessions
        self.reads = reads or sessions
        """Sessions of the read pool (`create_read_engine`): one round trip per plain read, and
        per single-statement write (it commits each statement by itself: no BEGIN, no COMMIT)."""

    def _single(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session for one statement that is atomic by itself (an INSERT, a conditional
        UPDATE … RETURNING): on the autocommit pool it costs one round trip instead of three."""
        return transaction(self.reads)

    # --- create and read -------------------------------------------------------------------

    async def create_or_get(
        self, body: TaskCreate, now: datetime | None = None,
        *, claimed_by: tuple[str, float] | None = None,
    ) -> tuple[ExecutorTask, bool]:
        """Insert the task, or return the one that already has its idempotency key.

        Race-safe: two concurrent creates with one key both try the insert; the unique index lets
        one win and the loser reads the winner's row back. Returns (task, created).
        `claimed_by=(runner, lease_seconds)`: a new task is inserted already claimed by that
        runner (a free worker waits for it), as `claim` would leave it, in the same statement.
        """
        now = now or utcnow()
        task = ExecutorTask(
            id=str(uuid.uuid4()), job_id=body.job_id, stage=body.stage.value,
            attempt=body.attempt, idempotency_key=body.idempotency_key,
            params=body.params.model_dump(mode="json"), status=TaskStatus.CREATED.value,
            landing_scope=body.landing_scope,
            parameters={k: v.model_dump(mode="json") for k, v in body.parameters.items()} or None,
            created_at=now, updated_at=now,
        )
        if claimed_by is not None:
            runner, lease_seconds = claimed_by
            task.status = TaskStatus.PROCESSING.value
            task.runner = runner
            task.lease_expires_at = now + timedelta(seconds=lease_seconds)
            task.started_at = now
        row = {column: getattr(task, column) for column in _TASK_COLUMNS}

        async def insert(session: AsyncSession) -> None:
            # Core: the ORM's unit of work for one row cost more CPU than the INSERT itself
            await (await session.connection()).execute(_INSERT_TASK, row)

        try:  # a new key is the common case: insert first, read back only on a conflict
            await read_retrying(self._single, insert)
        except IntegrityError:
            existing = await self.get_by_key(body.idempotency_key)
            if existing is None:  # the conflict was not on the key after all
                raise
            return existing, False
        return task, True

    async def get(self, task_id: str) -> ExecutorTask | None:
        return await read_retrying(self.reads, lambda s: s.get(ExecutorTask, task_id))

    async def get_many(self, task_ids: Collection[str]) -> list[ExecutorTask]:
        """The tasks among `task_ids` that exist, in one query."""
        query = select(ExecutorTask).where(col(ExecutorTask.id).in_(list(task_ids)))

        async def read(session: AsyncSession) -> list[ExecutorTask]:
            return list((await session.execute(query)).scalars().all())

        return await read_retrying(self.reads, read)

    async def get_by_key(self, idempotency_key: str) -> ExecutorTask | None:
        query = select(ExecutorTask).where(col(ExecutorTask.idempotency_key) == idempotency_key)

        async def read(session: AsyncSession) -> ExecutorTask | None:
            return (await session.execute(query)).scalars().first()

        return await read_retrying(self.reads, read)

    async def list_for_job(self, job_id: str) -> list[ExecutorTask]:
        """A job's tasks, oldest first."""
        query = (
            select(ExecutorTask)
            .where(col(ExecutorTask.job_id) == job_id)
            .order_by(col(ExecutorTask.created_at), col(ExecutorTask.id))
        )
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars().all())

    # --- the runner's side: claim, lease, progress, finish -----------------------------------

    async def claim(
        self, task_id: str, runner: str, lease_seconds: float, now: datetime | None = None
    ) -> ExecutorTask | None:
        """Take the task for `runner` if it is unfinished and nobody else holds it.

        The run starts from its inputs, so progress is reset. None when the task is finished,
        cancelled, unknown, or held by another runner.
        """
        now = now or utcnow()
        values = {"p_task_id": task_id, "p_runner": runner, "p_now": now,
                  "p_until": now + timedelta(seconds=lease_seconds)}

        async def write(session: AsyncSession) -> ExecutorTask | None:
            # claiming again what this runner already holds is harmless: safe to retry
            return (await session.execute(_claim_statement(), values)).scalars().first()

        return await read_retrying(self._single, write)

    async def renew_leases(
        self, task_ids: Collection[str], runner: str, lease_seconds: float,
        now: datetime | None = None,
    ) -> set[str]:
        """Extend the leases `runner` still holds; returns the ids it still holds."""
        if not task_ids:
            return set()
        now = now or utcnow()
        async with transaction(self.sessions) as session:
            await session.execute(
                update(ExecutorTask)
                .where(col(ExecutorTask.id).in_(list(task_ids)), _held_by(runner))
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
                .execution_options(synchronize_session=False)
            )
            return await self._held(session, task_ids, runner)

    async def held(self, task_ids: Collection[str], runner: str) -> set[str]:
        """Which of `task_ids` `runner` still holds (not cancelled, not taken over)."""
        if not task_ids:
            return set()
        # a plain read: on the autocommit pool, one round trip instead of BEGIN, it, ROLLBACK
        return await read_retrying(self.reads, lambda s: self._held(s, task_ids, runner))

    @staticmethod
    async def _held(session: AsyncSession, task_ids: Collection[str], runner: str) -> set[str]:
        query = select(col(ExecutorTask.id)).where(
            col(ExecutorTask.id).in_(list(task_ids)), _held_by(runner)
        )
        return set((await session.execute(query)).scalars().all())

    async def save_progress(
        self, updates: Sequence[tuple[str, float, int, int]], runner: str,
        now: datetime | None = None,
    ) -> None:
        """Write (task_id, percent, processed, total) of the tasks `runner` holds, at once."""
        if not updates:
            return
        now = now or utcnow()
        async with transaction(self.sessions) as session:
            for task_id, percent, processed, total in updates:
                await session.execute(
                    update(ExecutorTask)
                    .where(col(ExecutorTask.id) == task_id, _held_by(runner))
                    .values(progress=percent, processed=processed, total=total, updated_at=now)
                    .execution_options(synchronize_session=False)
                )

    async def finish(
        self,
        task_id: str,
        runner: str,
        status: TaskStatus,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        progress: tuple[float, int, int] | None = None,
        now: datetime | None = None,
    ) -> ExecutorTask | None:
        """Record how the run ended, only while `runner` still holds the task.

        A task cancelled meanwhile (or taken over after a lapsed lease) is left as it is, so a
        cancelled task never turns completed or failed. Returns the row as written, or None when
        it was not written.
        """
        now = now or utcnow()
        values: dict[str, Any] = {
            "p_status": status.value, "p_result": dict(result) if result is not None else None,
            "p_error": error, "p_finished_at": now, "p_updated_at": now,
            "p_progress": None, "p_processed": None, "p_total": None,
            "p_task_id": task_id, "p_runner": runner,
        }
        if progress is not None:
            values.update(p_progress=progress[0], p_processed=progress[1], p_total=progress[2])

        async def write(session: AsyncSession) -> ExecutorTask | None:
            # one atomic statement; a retry after a lost answer finds the task no longer held
            # and reports it not written, which costs its job a poll, never a second end.
            # On PostgreSQL the same statement wakes the watchers of other processes.
            finish = _finish_statement(session.get_bind().dialect.name == "postgresql")
            return (await session.execute(finish, values)).scalars().first()

        return await read_retrying(self._single, write)

    async def release(self, task_ids: Collection[str], runner: str) -> None:
        """Give up held tasks unfinished, so any runner may claim them at once."""
        if not task_ids:
            return
        async with transaction(self.sessions) as session:
            await session.execute(
                update(ExecutorTask)
                .where(col(ExecutorTask.id).in_(list(task_ids)), _held_by(runner))
                .values(runner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )

    # --- cancel and recovery -----------------------------------------------------------------

    async def cancel(self, task_id: str, now: datetime | None = None) -> ExecutorTask | None:
        """Mark an unfinished task cancelled; a finished one is left alone. None if unknown."""
        now = now or utcnow()
        async with transaction(self.sessions) as session:
            await session.execute(
                update(ExecutorTask)
                .where(col(ExecutorTask.id) == task_id, col(ExecutorTask.status).in_(_ACTIVE))
                .values(status=TaskStatus.CANCELLED.value, finished_at=now, updated_at=now,
                        lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            return await session.get(ExecutorTask, task_id, populate_existing=True)

    async def find_orphaned(
        self, limit: int, *, exclude: Collection[str] = (), now: datetime | None = None
    ) -> list[str]:
        """Unfinished tasks nobody holds (lease lapsed or never leased), oldest first."""
        if limit <= 0:
            return []
        now = now or utcnow()
        query = (
            select(col(ExecutorTask.id))
            .where(
                col(ExecutorTask.status).in_(_ACTIVE),
                or_(col(ExecutorTask.lease_expires_at).is_(None),
                    col(ExecutorTask.lease_expires_at) < now),
            )
            .order_by(col(ExecutorTask.created_at), col(ExecutorTask.id))
            .limit(limit)
        )
        if exclude:
            query = query.where(col(ExecutorTask.id).not_in(list(exclude)))

        async def read(session: AsyncSession) -> list[str]:
            return list((await session.execute(query)).scalars().all())

        # a sweep runs whenever a worker frees up: one round trip on the autocommit pool
        return await read_retrying(self.reads, read)

    async def running_stages(self, now: datetime | None = None) -> set[tuple[str, str]]:
        """(job id, stage) of every task some runner holds now (processing, lease not lapsed)."""
        now = now or utcnow()
        query = select(col(ExecutorTask.job_id), col(ExecutorTask.stage)).where(
            col(ExecutorTask.status) == TaskStatus.PROCESSING.value,
            col(ExecutorTask.lease_expires_at) >= now,
        )
        async with self.sessions() as session:
            return {(str(job), str(stage)) for job, stage in (await session.execute(query)).all()}
