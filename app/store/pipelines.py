"""Every query on pipelines, their versions, ticks and backfills, and on the runs they made."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.domain.states import STOPPED_STATUSES, JobStatus
from app.store.models import Job, Pipeline, PipelineBackfill, PipelineTick, PipelineVersion

_STOPPED = sorted(STOPPED_STATUSES)


async def get_pipeline(session: AsyncSession, owner: str, name: str) -> Pipeline | None:
    query = select(Pipeline).where(col(Pipeline.owner) == owner, col(Pipeline.name) == name)
    return (await session.execute(query)).scalars().first()


async def get_pipeline_by_id(session: AsyncSession, pipeline_id: str) -> Pipeline | None:
    return await session.get(Pipeline, pipeline_id)


async def list_pipelines(
    session: AsyncSession, owner: str, *, limit: int, offset: int
) -> tuple[int, list[Pipeline]]:
    where = col(Pipeline.owner) == owner
    total = (await session.execute(select(func.count()).select_from(Pipeline).where(where)))
    query = select(Pipeline).where(where).order_by(col(Pipeline.name)).limit(limit).offset(offset)
    return int(total.scalar_one()), list((await session.execute(query)).scalars().all())


async def add_version(session: AsyncSession, version: PipelineVersion) -> None:
    session.add(version)
    await session.flush()


async def list_versions(session: AsyncSession, pipeline_id: str) -> list[PipelineVersion]:
    query = (select(PipelineVersion).where(col(PipelineVersion.pipeline_id) == pipeline_id)
             .order_by(col(PipelineVersion.version).desc()))
    return list((await session.execute(query)).scalars().all())


async def delete_pipeline(session: AsyncSession, pipeline_id: str) -> None:
    """The pipeline, its versions, ticks and backfills; its jobs stay."""
    for table in (PipelineTick, PipelineBackfill, PipelineVersion):
        await session.execute(delete(table).where(col(table.pipeline_id) == pipeline_id))
    await session.execute(delete(Pipeline).where(col(Pipeline.id) == pipeline_id))


async def due_pipelines(session: AsyncSession, now: datetime, limit: int) -> list[Pipeline]:
    """Pipelines whose schedule has a tick at or before `now` not yet decided."""
    query = (
        select(Pipeline)
        .where(col(Pipeline.suspend).is_(False), col(Pipeline.next_fire_at).is_not(None),
               col(Pipeline.next_fire_at) <= now)
        .order_by(col(Pipeline.next_fire_at)).limit(limit)
    )
    return list((await session.execute(query)).scalars().all())


async def move_cursor(
    session: AsyncSession, pipeline_id: str, next_fire_at: datetime | None
) -> None:
    """Move the next fire time forward, never back (replicas may race here harmlessly);
    None: the schedule has no more ticks."""
    query = update(Pipeline).where(col(Pipeline.id) == pipeline_id)
    if next_fire_at is not None:
        query = query.where(col(Pipeline.next_fire_at) < next_fire_at)
    await session.execute(query.values(next_fire_at=next_fire_at)
                          .execution_options(synchronize_session=False))


async def active_runs(session: AsyncSession, pipeline_id: str) -> list[Job]:
    """The pipeline's runs that are not final (a suspended run is active), oldest first."""
    query = (select(Job).where(col(Job.pipeline_id) == pipeline_id,
                               col(Job.status).not_in(_STOPPED))
             .order_by(col(Job.created_at)))
    return list((await session.execute(query)).scalars().all())


async def insert_tick(session: AsyncSession, tick: PipelineTick) -> None:
    """Insert the tick; raises IntegrityError when another replica decided it already."""
    session.add(tick)
    await session.flush()


async def get_tick(session: AsyncSession, pipeline_id: str, at: datetime) -> PipelineTick | None:
    query = select(PipelineTick).where(col(PipelineTick.pipeline_id) == pipeline_id,
                                       col(PipelineTick.scheduled_for) == at)
    return (await session.execute(query)).scalars().first()


async def take_tick(
    session: AsyncSession, tick_id: int, *, expected: Sequence[str], values: dict[str, Any]
) -> bool:
    """Change a tick only if its outcome is still one of `expected`; True when this call did."""
    result = await session.execute(
        update(PipelineTick)
        .where(col(PipelineTick.id) == tick_id, col(PipelineTick.outcome).in_(list(expected)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


async def last_ticks(session: AsyncSession, pipeline_id: str, limit: int) -> list[PipelineTick]:
    query = (select(PipelineTick).where(col(PipelineTick.pipeline_id) == pipeline_id)
             .order_by(col(PipelineTick.scheduled_for).desc()).limit(limit))
    return list((await session.execute(query)).scalars().all())


async def add_backfill(session: AsyncSession, backfill: PipelineBackfill) -> None:
    session.add(backfill)
    await session.flush()


async def get_backfill(
    session: AsyncSession, pipeline_id: str, backfill_id: str
) -> PipelineBackfill | None:
    query = select(PipelineBackfill).where(col(PipelineBackfill.id) == backfill_id,
                                           col(PipelineBackfill.pipeline_id) == pipeline_id)
    return (await session.execute(query)).scalars().first()


async def backfill_ticks(session: AsyncSession, backfill_id: str) -> list[PipelineTick]:
    query = (select(PipelineTick).where(col(PipelineTick.backfill_id) == backfill_id)
             .order_by(col(PipelineTick.scheduled_for)))
    return list((await session.execute(query)).scalars().all())


async def backfills_with_pending_ticks(session: AsyncSession, limit: int) -> list[PipelineBackfill]:
    pending = (select(col(PipelineTick.backfill_id))
               .where(col(PipelineTick.outcome) == "pending").distinct())
    query = (select(PipelineBackfill).where(col(PipelineBackfill.id).in_(pending))
             .order_by(col(PipelineBackfill.created_at)).limit(limit))
    return list((await session.execute(query)).scalars().all())


async def count_active_jobs(session: AsyncSession, job_ids: Sequence[str]) -> int:
    if not job_ids:
        return 0
    query = select(func.count()).select_from(Job).where(col(Job.id).in_(list(job_ids)),
                                                        col(Job.status).not_in(_STOPPED))
    return int((await session.execute(query)).scalar_one())


async def job_statuses(session: AsyncSession, job_ids: Sequence[str]) -> dict[str, str]:
    if not job_ids:
        return {}
    query = select(col(Job.id), col(Job.status)).where(col(Job.id).in_(list(job_ids)))
    return {job_id: status for job_id, status in (await session.execute(query)).all()}


async def finished_run_counts(session: AsyncSession) -> dict[tuple[str, str], int]:
    """(pipeline id, status) → how many finished runs it has."""
    # `status || ''` keeps the planner off the status index: without statistics SQLite took it
    # and read every finished job of the service each scheduler pass, not only the pipelines'.
    stopped = (col(Job.status) + literal("")).in_(_STOPPED)
    query = (select(col(Job.pipeline_id), col(Job.status), func.count())
             .where(col(Job.pipeline_id).is_not(None), stopped)
             .group_by(col(Job.pipeline_id), col(Job.status)))
    return {(str(pid), status): int(n) for pid, status, n in (await session.execute(query)).all()}


async def finished_runs_beyond(
    session: AsyncSession, pipeline_id: str, statuses: Sequence[JobStatus], keep: int
) -> list[str]:
    """Ids of the pipeline's runs in `statuses` older than the newest `keep`, oldest first."""
    query = (select(col(Job.id))
             .where(col(Job.pipeline_id) == pipeline_id,
                    col(Job.status).in_([s.value for s in statuses]))
             .order_by(col(Job.ended_at).desc(), col(Job.created_at).desc(), col(Job.id).desc())
             .offset(keep))
    return list(reversed([str(i) for i in (await session.execute(query)).scalars().all()]))


async def delete_finished_jobs(session: AsyncSession, job_ids: Sequence[str]) -> int:
    """Delete these jobs (their events go with them) if they are still finished."""
    if not job_ids:
        return 0
    result = await session.execute(
        delete(Job).where(col(Job.id).in_(list(job_ids)), col(Job.status).in_(_STOPPED))
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount


NO_RUN_OUTCOMES = ("missed", "skipped_overlap", "skipped_no_input")


async def prune_ticks(session: AsyncSession, pipeline_id: str, keep: int) -> int:
    """Forget the ticks that ran nothing, beyond the newest `keep` ticks of the pipeline.

    A tick that made a run stays, so a backfill never runs it again."""
    boundary = (select(col(PipelineTick.scheduled_for))
                .where(col(PipelineTick.pipeline_id) == pipeline_id)
                .order_by(col(PipelineTick.scheduled_for).desc()).offset(keep).limit(1))
    oldest_kept = (await session.execute(boundary)).scalar_one_or_none()
    if oldest_kept is None:
        return 0
    result = await session.execute(
        delete(PipelineTick)
        .where(col(PipelineTick.pipeline_id) == pipeline_id,
               col(PipelineTick.scheduled_for) <= oldest_kept,
               col(PipelineTick.outcome).in_(NO_RUN_OUTCOMES))
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount
