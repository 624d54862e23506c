"""The scheduler, driven by an injected clock: ticks, DST, concurrency policies, missed ticks,
exactly-once under races and crashes, backfills and history limits. No sleeping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.domain.params import JobParams
from app.domain.pipelines import PipelineSpec
from app.domain.states import JobStatus
from app.domain.webhooks import EventType
from app.services.jobs import JobService
from app.services.pipelines import PipelineService
from app.services.webhooks import NewWebhook, WebhookService
from app.store.db import create_engine, session_factory, transaction
from app.store.models import Job, JobEvent, Pipeline, PipelineTick, WebhookDelivery
from app.watcher.scheduler import Scheduler, landing_has_input


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def at(self, moment: datetime) -> Clock:
        self.now = moment
        return self


@dataclass
class Faults:
    """Raises at the named points while armed: a crash that rolls the transaction back."""

    armed: set[str] = field(default_factory=set)

    def __call__(self, point: str) -> None:
        if point in self.armed:
            raise RuntimeError(f"injected crash at {point}")


@dataclass
class World:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    pipelines: PipelineService
    scheduler: Scheduler
    faults: Faults
    warehouse: Path

    async def apply(self, name: str = "nightly", **schedule: Any) -> PipelineSpec:
        spec = PipelineSpec.model_validate({
            "params": {"source": {"path": "orders/{run_date}/*.csv"}},
            "schedule": schedule or {"interval_seconds": 60},
            "history": {"succeeded": 2, "failed": 1},
        })
        await self.pipelines.apply("local", name, spec)
        return spec

    async def pass_at(self, moment: datetime, *, full: bool = True) -> None:
        """One scheduler pass at `moment` (only the ticks unless `full`)."""
        self.clock.at(moment)
        await (self.scheduler.run_once() if full else self.scheduler.fire_due())

    async def runs(self) -> list[Job]:
        async with self.sessions() as session:
            query = select(Job).where(col(Job.pipeline_id).is_not(None))
            rows = (await session.execute(query.order_by(col(Job.created_at)))).scalars().all()
        return sorted(rows, key=lambda j: (j.pipeline or {}).get("scheduled_for") or "")

    async def ticks(self) -> dict[datetime, str]:
        async with self.sessions() as session:
            rows = (await session.execute(select(PipelineTick))).scalars().all()
        return {t.scheduled_for: t.outcome for t in rows}

    async def finish(self, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(update(Job).where(col(Job.id) == job_id).values(
                status=status.value, ended_at=self.clock.now))


def world_of(sessions: async_sessionmaker[AsyncSession], clock: Clock, warehouse: Path,
             **options: Any) -> World:
    faults = Faults()
    pipelines = PipelineService(sessions, JobService(sessions, clock=clock), clock=clock)
    scheduler = Scheduler(pipelines, warehouse_dir=warehouse, clock=clock, fault=faults,
                          **options)
    return World(sessions, clock, pipelines, scheduler, faults, warehouse)


@pytest.fixture
def world(sessions: async_sessionmaker[AsyncSession], warehouse_dir: Path) -> World:
    return world_of(sessions, Clock(utc(2026, 1, 5, 12, 0, 30)), warehouse_dir)


def scheduled(job: Job) -> str:
    return str((job.pipeline or {})["scheduled_for"])


async def test_a_tick_makes_one_run_at_its_time_and_only_once(world: World) -> None:
    await world.apply()
    await world.pass_at(utc(2026, 1, 5, 12, 0, 59))
    assert await world.runs() == []
    world.clock.at(utc(2026, 1, 5, 12, 1, 0))
    await world.scheduler.run_once()
    await world.scheduler.run_once()
    [run] = await world.runs()
    assert run.pipeline is not None and run.pipeline["trigger"] == "schedule"
    assert run.pipeline["scheduled_for"] == "2026-01-05T12:01:00Z"
    assert run.pipeline["parameters"]["run_time"]["value"] == "2026-01-05T12:01:00Z"
    assert run.params["source"]["path"] == "orders/2026-01-05/*.csv"
    view = await world.pipelines.get("local", "nightly")
    assert view.pipeline.next_fire_at == utc(2026, 1, 5, 12, 2)
    assert [(t.outcome, t.job_id) for t in view.ticks] == [("created", run.id)]


async def test_forbid_skips_a_tick_while_a_run_is_active(world: World) -> None:
    await world.apply(interval_seconds=60)
    for minute in (1, 2):
        await world.pass_at(utc(2026, 1, 5, 12, minute))
    [first] = await world.runs()
    await world.finish(first.id)
    await world.pass_at(utc(2026, 1, 5, 12, 3))
    assert await world.ticks() == {utc(2026, 1, 5, 12, 1): "created",
                                   utc(2026, 1, 5, 12, 2): "skipped_overlap",
                                   utc(2026, 1, 5, 12, 3): "created"}


async def test_a_suspended_run_counts_as_active(world: World) -> None:
    await world.apply(interval_seconds=60)
    await world.pass_at(utc(2026, 1, 5, 12, 1))
    [first] = await world.runs()
    await world.pipelines.jobs.act("local", first.id, "suspend")
    await world.pass_at(utc(2026, 1, 5, 12, 2))
    assert (await world.ticks())[utc(2026, 1, 5, 12, 2)] == "skipped_overlap"


async def test_allow_runs_beside_the_active_run(world: World) -> None:
    await world.apply(interval_seconds=60, concurrency_policy="Allow")
    for minute in (1, 2):
        await world.pass_at(utc(2026, 1, 5, 12, minute))
    runs = await world.runs()
    assert [r.status for r in runs] == ["Pending", "Pending"]


async def test_replace_cancels_the_active_run_and_starts_the_new_one(world: World) -> None:
    await world.apply(interval_seconds=60, concurrency_policy="Replace")
    for minute in (1, 2):
        await world.pass_at(utc(2026, 1, 5, 12, minute))
    old, new = await world.runs()
    assert scheduled(old) < scheduled(new)
    assert (old.status, new.status) == ("Cancelled", "Pending")


async def test_without_catchup_only_the_latest_missed_tick_runs(world: World) -> None:
    await world.apply(interval_seconds=60)
    await world.pass_at(utc(2026, 1, 5, 12, 10, 30))
    ticks = await world.ticks()
    assert ticks.pop(utc(2026, 1, 5, 12, 10)) == "created"
    assert set(ticks) == {utc(2026, 1, 5, 12, m) for m in range(1, 10)}
    assert set(ticks.values()) == {"missed"}
    view = await world.pipelines.get("local", "nightly")
    assert view.pipeline.next_fire_at == utc(2026, 1, 5, 12, 11)


async def test_with_catchup_every_missed_tick_runs_oldest_first(world: World) -> None:
    await world.apply(interval_seconds=60, catchup=True, concurrency_policy="Allow")
    await world.pass_at(utc(2026, 1, 5, 12, 10, 30))
    runs = await world.runs()
    assert [scheduled(r) for r in runs] == [f"2026-01-05T12:{m:02d}:00Z" for m in range(1, 11)]
    assert set((await world.ticks()).values()) == {"created"}


@pytest.mark.parametrize(("deadline", "outcome"), [(60, "created"), (10, "missed")])
async def test_a_tick_later_than_the_starting_deadline_is_missed(
    world: World, deadline: int, outcome: str
) -> None:
    await world.apply(interval_seconds=60, starting_deadline_seconds=deadline)
    await world.pass_at(utc(2026, 1, 5, 12, 1, 30))
    assert await world.ticks() == {utc(2026, 1, 5, 12, 1): outcome}


async def test_a_suspended_schedule_does_not_fire_and_resumes_from_now(world: World) -> None:
    await world.apply(interval_seconds=60)
    await world.pipelines.set_suspend("local", "nightly", True)
    await world.pass_at(utc(2026, 1, 5, 12, 5, 30))
    assert await world.ticks() == {}
    await world.pipelines.set_suspend("local", "nightly", False)
    await world.pass_at(utc(2026, 1, 5, 12, 6))
    assert await world.ticks() == {utc(2026, 1, 5, 12, 6): "created"}


@pytest.mark.parametrize(("start", "expected", "days"), [
    # spring forward: 02:30 does not exist on 29 March; it fires once, at 03:00 CEST
    (utc(2026, 3, 27, 12), [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0),
                            utc(2026, 3, 30, 0, 30)], ["2026-03-28", "2026-03-29", "2026-03-30"]),
    # fall back: 02:30 happens twice on 25 October; it fires once, at the first
    (utc(2026, 10, 23, 12), [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30),
                             utc(2026, 10, 26, 1, 30)], ["2026-10-24", "2026-10-25", "2026-10-26"]),
])
async def test_a_berlin_nightly_fires_once_a_day_across_daylight_saving_changes(
    world: World, start: datetime, expected: list[datetime], days: list[str]
) -> None:
    world.clock.at(start)
    await world.apply(cron="30 2 * * *", timezone="Europe/Berlin", concurrency_policy="Allow")
    moment = start
    while moment < start + timedelta(days=3):  # a pass every 20 minutes for three days
        moment += timedelta(minutes=20)
        await world.pass_at(moment)
    ticks = await world.ticks()
    assert sorted(ticks) == expected and set(ticks.values()) == {"created"}
    run_dates = [(r.pipeline or {})["parameters"]["run_date"]["value"] for r in await world.runs()]
    assert run_dates == days


async def test_a_crash_between_deciding_a_tick_and_creating_its_job_never_makes_two(
    world: World,
) -> None:
    await world.apply(interval_seconds=60)
    world.faults.armed.add("after_tick_decided")
    await world.pass_at(utc(2026, 1, 5, 12, 1))
    assert await world.ticks() == {} and await world.runs() == []  # rolled back together
    world.faults.armed.clear()
    await world.scheduler.run_once()
    [run] = await world.runs()
    # a crash after the commit but before the cursor moved: the next pass sees the tick again
    async with transaction(world.sessions) as session:
        await session.execute(update(Pipeline).values(next_fire_at=utc(2026, 1, 5, 12, 1)))
    await world.scheduler.run_once()
    assert [r.id for r in await world.runs()] == [run.id]
    assert await world.ticks() == {utc(2026, 1, 5, 12, 1): "created"}


@pytest.fixture
async def second_world(database_url: str, warehouse_dir: Path) -> AsyncIterator[World]:
    """Another replica: its own engine and pool on the same database."""
    engine = create_engine(database_url)
    yield world_of(session_factory(engine), Clock(utc(2026, 1, 5, 12, 0, 30)), warehouse_dir)
    await engine.dispose()


async def test_two_replicas_racing_make_exactly_one_run_per_tick(
    world: World, second_world: World
) -> None:
    await world.apply(interval_seconds=60, catchup=True, concurrency_policy="Allow")
    for moment in (utc(2026, 1, 5, 12, 20, 30), utc(2026, 1, 5, 12, 40, 30)):
        world.clock.at(moment)
        second_world.clock.at(moment)
        await asyncio.gather(world.scheduler.run_once(), second_world.scheduler.run_once(),
                             world.scheduler.run_once())
    runs = await world.runs()
    expected = [f"2026-01-05T12:{m:02d}:00Z" for m in range(1, 41)]
    assert sorted(scheduled(r) for r in runs) == expected
    assert len(await world.ticks()) == 40


async def test_a_tick_with_no_landed_file_is_skipped_no_input(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, warehouse_dir: Path
) -> None:
    landing = tmp_path / "landing"
    world = world_of(sessions, Clock(utc(2026, 1, 5, 12, 0, 30)), warehouse_dir,
                     has_input=landing_has_input(landing))
    await world.apply(interval_seconds=60)
    await world.pass_at(utc(2026, 1, 5, 12, 1))
    (landing / "orders" / "2026-01-05").mkdir(parents=True)
    (landing / "orders" / "2026-01-05" / "a.csv").write_text("x\n1\n")
    await world.pass_at(utc(2026, 1, 5, 12, 2))
    assert await world.ticks() == {utc(2026, 1, 5, 12, 1): "skipped_no_input",
                                   utc(2026, 1, 5, 12, 2): "created"}


async def test_a_backfill_runs_max_active_at_a_time_and_skips_ticks_that_ran(
    world: World,
) -> None:
    world.clock.at(utc(2026, 1, 10, 12))
    await world.apply(cron="0 2 * * *", timezone="UTC")
    async with transaction(world.sessions) as session:  # 4 January already ran on schedule
        pipeline = (await session.execute(select(Pipeline))).scalars().one()
        await session.execute(update(Pipeline).values(next_fire_at=utc(2026, 1, 4, 2)))
    await world.pass_at(utc(2026, 1, 4, 2), full=False)
    world.clock.at(utc(2026, 1, 10, 12))
    view = await world.pipelines.backfill("local", "nightly", utc(2026, 1, 1), utc(2026, 1, 4, 23),
                                          max_active=2)
    assert view.taken == [utc(2026, 1, d, 2) for d in (1, 2, 3)]
    started = [t.job_id for t, _status in view.runs if t.job_id]
    assert len(started) == 2 and [s for _t, s in view.runs] == ["Pending", "Pending", None]
    assert await world.scheduler.release_backfills() == 0  # both slots still taken
    await world.finish(started[0])
    assert await world.scheduler.release_backfills() == 1
    again = await world.pipelines.backfill("local", "nightly", utc(2026, 1, 1),
                                           utc(2026, 1, 4, 23), max_active=2)
    assert again.taken == []
    read = await world.pipelines.get_backfill("local", "nightly", view.backfill.id)
    assert all(t.job_id for t, _s in read.runs)
    backfilled = [r for r in await world.runs() if (r.pipeline or {})["trigger"] == "backfill"]
    assert sorted(scheduled(r) for r in backfilled) == [
        "2026-01-01T02:00:00Z", "2026-01-02T02:00:00Z", "2026-01-03T02:00:00Z"]
    assert pipeline.id == backfilled[0].pipeline_id


async def test_history_limits_delete_old_finished_runs_with_events_and_folders(
    world: World,
) -> None:
    await world.apply(interval_seconds=60, concurrency_policy="Allow")  # keeps 2 ok, 1 failed
    for minute in range(1, 9):
        await world.pass_at(utc(2026, 1, 5, 12, minute), full=False)
    runs = await world.runs()
    outcomes = [JobStatus.SUCCEEDED] * 4 + [JobStatus.FAILED, JobStatus.CANCELLED,
                                            JobStatus.FAILED]
    for run, status in zip(runs, outcomes, strict=False):
        (world.warehouse / run.id / "ods").mkdir(parents=True)
        (world.warehouse / run.id / "ods" / "part-00000.parquet").write_bytes(b"x")
        world.clock.at(world.clock.now + timedelta(seconds=1))
        await world.finish(run.id, status)
    running = runs[-1]
    (world.warehouse / running.id / "ods").mkdir(parents=True)
    deleted = await world.scheduler.enforce_history()
    assert deleted == 4
    kept = {r.id for r in await world.runs()}
    assert kept == {runs[2].id, runs[3].id, runs[6].id, running.id}
    folders = {p.name for p in world.warehouse.iterdir()}
    assert folders == kept, "no orphan folder, and no run without its folder"
    async with world.sessions() as session:
        events = await session.execute(select(func.count()).select_from(JobEvent).where(
            col(JobEvent.job_id).not_in(kept)))
    assert events.scalar_one() == 0
    assert await world.scheduler.enforce_history() == 0


async def test_applying_a_version_that_unsuspends_fires_from_now_on(world: World) -> None:
    await world.apply(interval_seconds=60, suspend=True)
    await world.pass_at(utc(2026, 1, 5, 12, 5, 30))
    await world.apply(interval_seconds=60, suspend=False)
    view = await world.pipelines.get("local", "nightly")
    assert (view.pipeline.version, view.pipeline.next_fire_at) == (2, utc(2026, 1, 5, 12, 6))
    await world.pass_at(utc(2026, 1, 5, 12, 6))
    assert await world.ticks() == {utc(2026, 1, 5, 12, 6): "created"}


def test_a_glob_python_cannot_read_is_left_to_the_engine(tmp_path: Path) -> None:
    has_input = landing_has_input(tmp_path)
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "a.csv").write_text("x\n")
    assert has_input("local", JobParams.model_validate({"source": {"path": "orders/*.csv"}}))
    assert not has_input("local", JobParams.model_validate({"source": {"path": "none/*.csv"}}))
    odd = JobParams.model_validate({"source": {"path": "orders/**x/*.csv"}})
    assert has_input("local", odd) is True


async def test_ticks_that_ran_nothing_are_forgotten_beyond_the_newest_hundred(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.watcher.scheduler.TICKS_KEPT", 3)
    await world.apply(interval_seconds=60)  # Forbid: while the first run is active, skipped
    for minute in range(1, 8):
        await world.pass_at(utc(2026, 1, 5, 12, minute), full=False)
    ticks = await world.ticks()
    assert ticks == {utc(2026, 1, 5, 12, 1): "created",
                     **{utc(2026, 1, 5, 12, m): "skipped_overlap" for m in (5, 6, 7)}}


async def test_a_missed_tick_is_queued_for_the_owners_tick_missed_webhooks(world: World) -> None:
    hooks = WebhookService(world.sessions)
    wanted = await hooks.create("local", NewWebhook("http://127.0.0.1:9/missed",
                                                    [EventType.PIPELINE_TICK_MISSED], "nightly"))
    await hooks.create("local", NewWebhook("http://127.0.0.1:9/other",
                                           [EventType.PIPELINE_TICK_MISSED], "another"))
    await world.apply(interval_seconds=60, starting_deadline_seconds=10)
    await world.pass_at(utc(2026, 1, 5, 12, 1, 30))
    async with world.sessions() as session:
        rows = (await session.execute(select(WebhookDelivery))).scalars().all()
    assert [(r.webhook_id, r.type) for r in rows] == [(wanted.id, "pipeline.tick_missed")]
    body = json.loads(rows[0].body)
    assert body["data"]["pipeline"] == "nightly"
    assert body["data"]["scheduled_for"] == "2026-01-05T12:01:00Z"
