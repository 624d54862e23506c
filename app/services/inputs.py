"""Incremental input: the landing manifest, the scan, and a `new_files` run's claim.

A run's files are claimed in the transaction that creates the run: the scan finds the files that
match `source.path` now (hashing only those whose size or mtime differ from the manifest), and
each is claimed by inserting (pipeline, path, sha256) under a unique constraint. What another
run got first is simply not ours; nothing matching and unclaimed → `NoNewInput`. The run's job
then reads exactly its claimed files (`params.source.files`), never the glob again.

A run that ends Failed or Cancelled gives its files back in the transaction of that transition,
and a retry claims them again in the transaction of the retry (see `on_transition`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.inputs import InputsTaken, LandedInput, NoNewInput
from app.domain.owners import landing_scope
from app.domain.states import JobStatus
from app.store import inputs as store
from app.store.models import Job, JobEvent, LandedFileRecord
from app.store.types import utcnow

_CHUNK = 1 << 20
GIVE_BACK = frozenset({JobStatus.FAILED.value, JobStatus.CANCELLED.value})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mtime(stat_mtime: float) -> datetime:
    """As the landing service reports it (microseconds: what both databases keep)."""
    return datetime.fromtimestamp(stat_mtime, UTC)


def scan(root: Path, pattern: str) -> list[tuple[str, int, datetime]]:
    """(path, size, mtime) of the regular files `pattern` matches under `root`, by path.

    Hidden names (an upload in progress is `.upload-…`) and anything resolving outside `root`
    are left out, as the engines would refuse them."""
    if not root.is_dir():
        return []
    root = root.resolve()
    found = []
    try:
        matches = list(root.glob(pattern))
    except (ValueError, NotImplementedError, OSError):
        return []
    for match in matches:
        rel = match.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            if not match.resolve(strict=True).is_relative_to(root) or not match.is_file():
                continue
            stat = match.stat()
        except (OSError, RuntimeError):
            continue
        found.append((rel.as_posix(), stat.st_size, _mtime(stat.st_mtime)))
    return sorted(found)


@dataclass
class InputClaimer:
    landing_dir: Path
    clock: Callable[[], datetime] = field(default=utcnow)

    def root_of(self, owner: str) -> Path:
        scope = landing_scope(owner)
        return self.landing_dir / scope if scope else self.landing_dir

    async def current_files(self, session: AsyncSession, owner: str,
                            pattern: str) -> list[LandedInput]:
        """The files matching `pattern` now, each with its digest; the ones the manifest did not
        know (put there by other means, or changed) are hashed and recorded."""
        root = self.root_of(owner)
        matches = await asyncio.to_thread(scan, root, pattern)
        known = await store.latest_records(session, owner, [path for path, _, _ in matches])
        fresh = [(path, size, mtime) for path, size, mtime in matches
                 if not (known.get(path) and known[path].size == size
                         and known[path].modified_at == mtime)]
        digests = await asyncio.to_thread(
            lambda: {path: sha256_file(root / path) for path, _, _ in fresh})
        now = self.clock()
        await store.record_landed(session, [
            LandedFileRecord(owner=owner, path=path, size=size, sha256=digests[path],
                             modified_at=mtime, landed_at=now)
            for path, size, mtime in fresh])
        return [LandedInput(path, size, digests.get(path) or known[path].sha256, mtime)
                for path, size, mtime in matches]

    async def claim_for(self, session: AsyncSession, job: Job, pipeline_id: str) -> None:
        """Claim the run's new files (in the caller's transaction, before the job is inserted)
        and write them into its params and `results.inputs`; NoNewInput when there are none."""
        source = dict(job.params["source"])
        files = await self.current_files(session, job.owner, source["path"])
        taken = await store.claimed_keys(session, pipeline_id, [(f.path, f.sha256) for f in files])
        candidates = [f for f in files if (f.path, f.sha256) not in taken]
        got = await store.claim(session, pipeline_id, job.id,
                                [(f.path, f.sha256, f.size) for f in candidates], self.clock())
        mine = [f for f in candidates if (f.path, f.sha256) in got]
        if not mine:
            raise NoNewInput(source["path"])
        job.params = {**job.params, "source": {**source, "files": [f.path for f in mine]}}
        job.results = {**job.results, "inputs": [f.document() for f in mine]}


async def record_upload(session: AsyncSession, owner: str, path: str, size: int, sha256: str,
                        modified_at: datetime, now: datetime) -> None:
    """The upload route's manifest entry for a file that just landed."""
    await store.record_landed(session, [LandedFileRecord(
        owner=owner, path=path, size=size, sha256=sha256, modified_at=modified_at,
        landed_at=now)])


def holds_inputs(job: Job) -> bool:
    """Whether the job's transitions may have to give back or claim again its input files
    (`on_transition`): only runs of `new_files` pipelines that claimed some."""
    return _claimed(job) is not None


def _claimed(job: Job) -> list[dict[str, object]] | None:
    if job.pipeline_id is None or (job.params.get("source") or {}).get("mode") != "new_files":
        return None
    inputs = (job.results or {}).get("inputs")
    return inputs if isinstance(inputs, list) else None


async def on_transition(session: AsyncSession, job: Job, events: Sequence[JobEvent]) -> None:
    """In a transition's transaction: a run ending Failed or Cancelled gives its files back;
    a retry claims them again, or raises InputsTaken if another run took any meanwhile."""
    inputs = _claimed(job) if events else None
    if inputs is None:
        return
    assert job.pipeline_id is not None
    if job.status in GIVE_BACK and any(e.to_status in GIVE_BACK for e in events):
        await store.release(session, job.id)
    elif any(e.event == "retry" for e in events):
        files = [(str(i["path"]), str(i["sha256"]), int(str(i["size"]))) for i in inputs]
        got = await store.claim(session, job.pipeline_id, job.id, files, events[-1].at)
        got |= {(c.path, c.sha256) for c in await store.claims_of(session, job.id)}
        lost = [path for path, digest, _ in files if (path, digest) not in got]
        if lost:
            raise InputsTaken(job.id, lost)
