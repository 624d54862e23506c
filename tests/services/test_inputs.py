"""Incremental input on both backends: what a `new_files` run claims, gives back and re-claims,
under concurrency too. Real files in a real landing directory; the clock is injected."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain.inputs import InputsTaken, NoNewInput, PipelineOnly
from app.domain.params import JobParams
from app.domain.pipelines import PipelineSpec
from app.domain.states import JobStatus
from app.services.inputs import InputClaimer
from app.services.jobs import JobService, NewJob
from app.services.pipelines import PipelineService
from app.services.transitions import change_job, fire
from app.store.models import InputClaim, Job, LandedFileRecord, PipelineTick
from app.watcher.scheduler import Scheduler


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def land(landing: Path, name: str, body: str) -> None:
    path = landing / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)


@pytest.fixture
def service(sessions: async_sessionmaker[AsyncSession], landing_dir: Path) -> PipelineService:
    clock = Clock()
    return PipelineService(sessions, JobService(sessions, clock=clock), clock=clock,
                           inputs=InputClaimer(landing_dir, clock=clock))


async def apply(service: PipelineService, name: str = "orders", **extra: Any) -> None:
    body: dict[str, Any] = {"params": {"source": {"path": "orders/*.csv", "mode": "new_files"}}}
    body.update(extra)
    await service.apply("local", name, PipelineSpec.model_validate(body))


async def run(service: PipelineService, name: str = "orders") -> Job:
    job, created = await service.run("local", name, {})
    assert created
    return job


def paths(job: Job) -> list[str]:
    return [i["path"] for i in job.results["inputs"]]


async def claims(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    async with sessions() as session:
        rows = (await session.execute(select(InputClaim))).scalars().all()
    return {r.path: r.job_id for r in rows}


async def end(service: PipelineService, job_id: str, event: str) -> Job:
    def change(job: Job) -> list[Any]:
        events = fire(job, event, service.clock(), message="by the test")
        job.ended_at = service.clock()
        return events

    return await change_job(service.sessions, job_id, change)


async def test_a_run_claims_the_matching_files_and_reads_exactly_those(
    service: PipelineService, landing_dir: Path,
) -> None:
    land(landing_dir, "orders/a.csv", "x\n1\n")
    land(landing_dir, "orders/b.csv", "x\n2\n")
    land(landing_dir, "other/c.csv", "x\n3\n")
    await apply(service)
    job = await run(service)
    assert paths(job) == ["orders/a.csv", "orders/b.csv"]
    first = job.results["inputs"][0]
    assert first["size"] == 4 and len(first["sha256"]) == 64
    params = JobParams.model_validate(job.params)
    assert params.source.files == ["orders/a.csv", "orders/b.csv"]
    assert await claims(service.sessions) == {"orders/a.csv": job.id, "orders/b.csv": job.id}
    async with service.sessions() as session:  # found by the scan, so now in the manifest
        manifest = (await session.execute(select(LandedFileRecord))).scalars().all()
    assert sorted(r.path for r in manifest) == ["orders/a.csv", "orders/b.csv"]


async def test_no_new_file_is_refused_and_only_new_files_are_taken(
    service: PipelineService, landing_dir: Path,
) -> None:
    await apply(service)
    with pytest.raises(NoNewInput):
        await run(service)
    land(landing_dir, "orders/a.csv", "x\n1\n")
    first = await run(service)
    await end(service, first.id, "cancel")  # gives a.csv back ...
    second = await run(service)
    assert paths(second) == ["orders/a.csv"]
    with pytest.raises(NoNewInput):  # ... held by an active run: not new
        await run(service)
    land(landing_dir, "orders/b.csv", "x\n2\n")
    assert paths(await run(service)) == ["orders/b.csv"]
    async with service.sessions() as session:
        jobs = (await session.execute(select(Job))).scalars().all()
    assert len(jobs) == 3  # a refused run made no job


async def test_the_same_bytes_are_not_new_other_bytes_at_the_same_path_are(
    service: PipelineService, landing_dir: Path,
) -> None:
    await apply(service)
    land(landing_dir, "orders/a.csv", "x\n1\n")
    first = await run(service)
    land(landing_dir, "orders/a.csv", "x\n1\n")  # landed again, same bytes, new mtime
    os.utime(landing_dir / "orders/a.csv", (1_900_000_000, 1_900_000_000))
    with pytest.raises(NoNewInput):
        await run(service)
    land(landing_dir, "orders/a.csv", "x\n9\n")  # other bytes
    again = await run(service)
    assert paths(again) == ["orders/a.csv"]
    assert again.results["inputs"][0]["sha256"] != first.results["inputs"][0]["sha256"]


@pytest.mark.parametrize("ending", ["fail", "cancel"])
async def test_a_run_that_ends_badly_gives_its_files_back_and_a_retry_takes_them_again(
    service: PipelineService, landing_dir: Path, ending: str,
) -> None:
    land(landing_dir, "orders/a.csv", "x\n1\n")
    await apply(service)
    first = await run(service)
    ended = await end(service, first.id, ending)
    assert ended.status in (JobStatus.FAILED.value, JobStatus.CANCELLED.value)
    assert await claims(service.sessions) == {}
    assert paths(ended) == ["orders/a.csv"]  # kept on the ended run
    retried = await service.jobs.act("local", first.id, "retry")
    assert retried.status == JobStatus.PENDING.value
    assert await claims(service.sessions) == {"orders/a.csv": first.id}


async def test_a_retry_is_refused_when_another_run_took_the_files(
    service: PipelineService, landing_dir: Path,
) -> None:
    land(landing_dir, "orders/a.csv", "x\n1\n")
    await apply(service)
    first = await run(service)
    await end(service, first.id, "fail")
    second = await run(service)
    with pytest.raises(InputsTaken) as refused:
        await service.jobs.act("local", first.id, "retry")
    assert refused.value.paths == ["orders/a.csv"]
    assert (await service.jobs.get("local", first.id)).status == JobStatus.FAILED.value
    assert await claims(service.sessions) == {"orders/a.csv": second.id}


async def test_deleting_an_unfinished_run_gives_its_files_back(
    service: PipelineService, landing_dir: Path,
) -> None:
    land(landing_dir, "orders/a.csv", "x\n1\n")
    await apply(service)
    await service.jobs.delete("local", (await run(service)).id)
    assert paths(await run(service)) == ["orders/a.csv"]


async def test_a_plain_job_cannot_ask_for_new_files(service: PipelineService) -> None:
    params = JobParams.model_validate({"source": {"path": "x/*.csv", "mode": "new_files"}})
    with pytest.raises(PipelineOnly):
        await service.jobs.create("local", NewJob(name="x", params=params))


async def test_a_tick_with_no_new_file_records_skipped_no_input_and_makes_no_job(
    service: PipelineService, landing_dir: Path, warehouse_dir: Path,
) -> None:
    await apply(service, schedule={"interval_seconds": 60, "concurrency_policy": "Allow"})
    scheduler = Scheduler(service, warehouse_dir=warehouse_dir, clock=service.clock)
    clock = service.clock
    assert isinstance(clock, Clock)
    land(landing_dir, "orders/a.csv", "x\n1\n")
    clock.now = datetime(2026, 1, 5, 2, 1, tzinfo=UTC)
    assert await scheduler.fire_due() == 1
    clock.now = datetime(2026, 1, 5, 2, 2, tzinfo=UTC)
    assert await scheduler.fire_due() == 0
    async with service.sessions() as session:
        ticks = (await session.execute(select(PipelineTick))).scalars().all()
        jobs = (await session.execute(select(Job))).scalars().all()
    assert sorted((t.scheduled_for.minute, t.outcome) for t in ticks) == [
        (1, "created"), (2, "skipped_no_input")]
    assert len(jobs) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_concurrent_runs_claim_disjoint_files_and_lose_none(
    service: PipelineService, landing_dir: Path,
) -> None:
    names = [f"orders/{i:02d}.csv" for i in range(40)]
    for i, name in enumerate(names):
        land(landing_dir, name, f"x\n{i}\n")
    await apply(service)
    for _round in range(3):  # several rounds: each a real race on the unique index
        outcomes = await asyncio.gather(*(run(service) for _ in range(4)),
                                        return_exceptions=True)
        runs = [o for o in outcomes if isinstance(o, Job)]
        assert all(isinstance(o, Job | NoNewInput) for o in outcomes), outcomes
        taken = [p for job in runs for p in paths(job)]
        assert len(taken) == len(set(taken))  # no file in two runs
        held = await claims(service.sessions)
        assert sorted(held) == names  # none lost
        assert all(held[p] == job.id for job in runs for p in paths(job))
        for job in runs:
            await end(service, job.id, "cancel")  # give them back for the next round
