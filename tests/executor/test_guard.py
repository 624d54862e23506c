"""The rules every stage runs under: its share of memory, a free-space floor on the warehouse's
disk, and no scratch folder left behind by a stage that died with its process."""

from __future__ import annotations

import threading
from collections import namedtuple
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contract.tasks import TaskCreate
from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.app import ExecutorService
from app.executor.engine.base import CancelToken, StageCancelled, StageRequest
from app.executor.engine.duckdb_engine import DuckDBEngine
from app.executor.guard import (
    DISK_FULL,
    FreeFloor,
    GuardedEngine,
    StageRefused,
    parse_free_floor,
    parse_size,
    stage_memory_limit,
)
from app.executor.tasks import TaskStore
from app.settings import Settings
from app.store.types import utcnow
from tests.executor.test_executor_api import running_executor
from tests.executor.test_runner import BlockingEngine, ProgressEngine
from tests.orders_data import generate, write_csv

Usage = namedtuple("Usage", "total used free")
GiB = 1024**3


def test_sizes_and_floors_parse() -> None:
    assert parse_size("200MB") == 200 * 1000**2
    assert parse_size("4GiB") == 4 * GiB
    assert parse_size("1.5 gb") == 1_500_000_000
    assert parse_size("1073741824") == GiB
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    assert parse_free_floor("5%").bytes_of(100 * GiB) == 5 * GiB
    assert parse_free_floor("2GiB").bytes_of(100 * GiB) == 2 * GiB
    assert parse_free_floor("0") == FreeFloor()
    with pytest.raises(ValueError, match="below 100%"):
        parse_free_floor("100%")


def test_a_stage_gets_seventy_percent_of_memory_shared_by_the_workers() -> None:
    assert stage_memory_limit(None, workers=2, total=20 * GiB) == f"{int(20 * GiB * 0.35) >> 20}MiB"
    assert stage_memory_limit("4GB", workers=2, total=20 * GiB) == "4GB"
    assert stage_memory_limit(None, workers=4) is not None  # this machine's memory


def test_the_service_applies_the_default_share(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, executor_workers=3,  # type: ignore[call-arg]
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    service = ExecutorService.from_settings(settings, async_sessionmaker())
    assert service.runner.memory_limit == stage_memory_limit(None, workers=3)
    assert isinstance(service.engine, GuardedEngine) and service.engine.name == "duckdb"


# --- disk -------------------------------------------------------------------------------------


def _request(root: Path) -> StageRequest:
    params = JobParams.model_validate(
        {"source": {"path": "orders/*.csv", "format": "csv", "options": {"header": True}}})
    return StageRequest(job_id="job-1", stage=Stage.LANDING_TO_ODS, params=params,
                        landing_dir=root / "landing", warehouse_dir=root / "warehouse")


def test_a_stage_does_not_start_below_the_floor(tmp_path: Path) -> None:
    engine = ProgressEngine()
    guarded = GuardedEngine(engine, min_free=FreeFloor(size=10**18))  # more than any disk
    with pytest.raises(StageRefused, match="STRATA_MIN_FREE_DISK") as caught:
        guarded.run_stage(_request(tmp_path), lambda p: None, CancelToken())
    assert caught.value.reason == DISK_FULL
    assert engine.requests == []


def test_a_running_stage_that_takes_the_disk_below_the_floor_is_stopped(tmp_path: Path) -> None:
    free = [100 * GiB]

    def disk_usage(path: Path) -> Usage:
        return Usage(200 * GiB, 200 * GiB - free[0], free[0])

    engine = BlockingEngine()
    guarded = GuardedEngine(engine, min_free=parse_free_floor("5%"), disk_usage=disk_usage,
                            poll_seconds=0.01)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            guarded.run_stage(_request(tmp_path), lambda p: None, CancelToken())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    free[0] = 9 * GiB  # the stage wrote most of the disk full: 9 GiB left, the floor is 10
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert isinstance(failure[0], StageRefused) and failure[0].reason == DISK_FULL
    assert "below the floor of 5% of the disk" in str(failure[0])


def test_a_cancel_is_still_a_cancel_under_the_guard(tmp_path: Path) -> None:
    engine = BlockingEngine()
    guarded = GuardedEngine(engine, min_free=parse_free_floor("0"))
    token = CancelToken()
    threading.Timer(0.05, token.cancel).start()
    with pytest.raises(StageCancelled):
        guarded.run_stage(_request(tmp_path), lambda p: None, token)


# --- scratch folders --------------------------------------------------------------------------


def _leftover(root: Path, job_id: str, layer: str) -> Path:
    """What a kill -9 mid-stage leaves: a scratch folder with half-written files."""
    folder = root / "warehouse" / job_id / f".tmp-{layer}-deadbeef"
    (folder / "out").mkdir(parents=True)
    (folder / "out" / "data_0.parquet").write_bytes(b"PAR1 half written")
    (folder / "spill").mkdir()
    return folder


def test_running_a_stage_again_sweeps_what_its_dead_run_left(tmp_path: Path) -> None:
    write_csv(generate(200, seed=1), tmp_path / "landing" / "orders", files=1)
    dead = _leftover(tmp_path, "job-1", "ods")
    other_layer = _leftover(tmp_path, "job-1", "dwd")
    other_job = _leftover(tmp_path, "job-2", "ods")
    result = GuardedEngine(DuckDBEngine()).run_stage(_request(tmp_path), lambda p: None,
                                                     CancelToken())
    assert result.rows == 200
    assert not dead.exists()
    assert other_layer.exists() and other_job.exists()  # not this stage's to judge
    assert [p.name for p in (tmp_path / "warehouse" / "job-1").iterdir()] != []


async def test_the_executor_sweeps_unowned_scratch_folders_when_it_starts(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    store = TaskStore(sessions)
    params = JobParams.model_validate({"source": {"path": "orders/*.csv"}})
    held, _ = await store.create_or_get(TaskCreate(
        job_id="job-held", stage=Stage.ODS_TO_DWD, attempt=1, idempotency_key="k-held",
        params=params))
    assert await store.claim(held.id, "another-live-runner", lease_seconds=600) is not None
    lapsed, _ = await store.create_or_get(TaskCreate(
        job_id="job-dead", stage=Stage.ODS_TO_DWD, attempt=1, idempotency_key="k-dead",
        params=params))
    await store.claim(lapsed.id, "a-dead-runner", lease_seconds=1,
                      now=utcnow() - timedelta(minutes=5))
    in_use = _leftover(tmp_path, "job-held", "dwd")
    dead = _leftover(tmp_path, "job-dead", "dwd")
    finished_job = _leftover(tmp_path, "job-old", "ds")
    layer = tmp_path / "warehouse" / "job-old" / "ds"
    layer.mkdir()

    async with running_executor(sessions, BlockingEngine(), tmp_path):
        assert not dead.exists() and not finished_job.exists()
        assert in_use.exists()  # a live runner elsewhere is writing it
        assert layer.exists()  # a finished layer is never scratch
