"""Every query on the landing manifest and on the input claims of `new_files` runs.

Claims are inserted with ON CONFLICT DO NOTHING ... RETURNING: a row that another run inserted
first (committed, or committing while this insert waits on PostgreSQL's unique index) is simply
not returned, so concurrent runs end with disjoint claims and no file is lost or given twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.store.models import InputClaim, LandedFileRecord

FileKey = tuple[str, str]
"""(path relative to the owner's landing space, sha256)"""


def _insert(session: AsyncSession, model: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert(model) if dialect == "postgresql" else sqlite.insert(model))


async def record_landed(session: AsyncSession, records: Sequence[LandedFileRecord]) -> None:
    """Add these files to the manifest; bytes already recorded at that path stay as they are."""
    if not records:
        return
    rows = [{"owner": r.owner, "path": r.path, "size": r.size, "sha256": r.sha256,
             "modified_at": r.modified_at, "landed_at": r.landed_at} for r in records]
    statement = _insert(session, LandedFileRecord).values(rows).on_conflict_do_nothing(
        index_elements=["owner", "path", "sha256"])
    await session.execute(statement)


async def latest_records(session: AsyncSession, owner: str,
                         paths: Sequence[str]) -> dict[str, LandedFileRecord]:
    """The newest manifest row of each of these paths."""
    found: dict[str, LandedFileRecord] = {}
    for start in range(0, len(paths), 500):
        chunk = list(paths[start:start + 500])
        query = (select(LandedFileRecord)
                 .where(col(LandedFileRecord.owner) == owner,
                        col(LandedFileRecord.path).in_(chunk))
                 .order_by(col(LandedFileRecord.id)))
        for record in (await session.execute(query)).scalars().all():
            found[record.path] = record  # ascending ids: the newest wins
    return found


async def claimed_keys(session: AsyncSession, pipeline_id: str,
                       keys: Sequence[FileKey]) -> set[FileKey]:
    """Which of these files a run of the pipeline holds or consumed."""
    taken: set[FileKey] = set()
    for start in range(0, len(keys), 500):
        chunk = list(keys[start:start + 500])
        query = select(col(InputClaim.path), col(InputClaim.sha256)).where(
            col(InputClaim.pipeline_id) == pipeline_id,
            tuple_(col(InputClaim.path), col(InputClaim.sha256)).in_(chunk))
        taken.update((p, s) for p, s in (await session.execute(query)).all())
    return taken


async def claim(session: AsyncSession, pipeline_id: str, job_id: str,
                files: Sequence[tuple[str, str, int]], now: datetime) -> set[FileKey]:
    """Claim (path, sha256, size) files for the run; returns the ones this call got."""
    got: set[FileKey] = set()
    for start in range(0, len(files), 500):
        rows = [{"pipeline_id": pipeline_id, "path": path, "sha256": digest, "size": size,
                 "job_id": job_id, "claimed_at": now}
                for path, digest, size in files[start:start + 500]]
        statement = (_insert(session, InputClaim).values(rows)
                     .on_conflict_do_nothing(index_elements=["pipeline_id", "path", "sha256"])
                     .returning(col(InputClaim.path), col(InputClaim.sha256)))
        got.update((p, s) for p, s in (await session.execute(statement)).all())
    return got


async def release(session: AsyncSession, job_id: str) -> int:
    """Give the run's files back (it ended Failed or Cancelled, or was deleted unfinished)."""
    result = await session.execute(
        delete(InputClaim).where(col(InputClaim.job_id) == job_id)
        .execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount


async def claims_of(session: AsyncSession, job_id: str) -> list[InputClaim]:
    query = select(InputClaim).where(col(InputClaim.job_id) == job_id).order_by(
        col(InputClaim.path))
    return list((await session.execute(query)).scalars().all())
