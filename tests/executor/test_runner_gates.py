"""The runner holds each written layer to its gates, on the DuckDB engine over real files.

A failed gate fails the task with a machine-readable reason and `retryable: false`, removes the
layer and keeps its rejects; a warning rides on the completed task's result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contract.tasks import TaskCreate, TaskStatus
from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.engine.duckdb_engine import DuckDBEngine
from app.executor.runner import TaskRunner
from app.executor.schemas import task_public
from app.executor.tasks import TaskStore
from app.store.models import ExecutorTask
from tests.waiting import wait_for

CSV = "device_id,reading\nd1,1.5\nd2,oops\nd3,2.5\nd4,3.5\n"  # one of four rejected


def job_params(**ods: Any) -> JobParams:
    return JobParams.model_validate({
        "source": {"path": "in/*.csv", "format": "csv",
                   "options": {"header": True, "all_varchar": True}},
        "layers": {"ods": {
            "sql": "SELECT device_id, TRY_CAST(reading AS DOUBLE) AS reading FROM landing",
            "checks": [{"name": "no_reading", "expr": "reading IS NOT NULL"}], **ods}},
    })


@pytest.fixture
async def runner(
    sessions: async_sessionmaker[AsyncSession], landing_dir: Path, warehouse_dir: Path
) -> AsyncIterator[TaskRunner]:
    (landing_dir / "in").mkdir()
    (landing_dir / "in" / "readings.csv").write_text(CSV)
    runner = TaskRunner(TaskStore(sessions), DuckDBEngine(), landing_dir=landing_dir,
                        warehouse_dir=warehouse_dir, workers=1, flush_interval=0.02,
                        sweep_interval=60.0)
    await runner.start()
    yield runner
    await runner.stop(grace=0, hard_timeout=2)


async def run_ods(runner: TaskRunner, params: JobParams) -> ExecutorTask:
    body = TaskCreate(job_id="job-1", stage=Stage.LANDING_TO_ODS, attempt=1,
                      idempotency_key="job-1:ods:1", params=params)
    task, _ = await runner.store.create_or_get(body)
    runner.submit(task.id)

    async def done() -> ExecutorTask | None:
        row = await runner.store.get(task.id)
        return row if row is not None and TaskStatus(row.status).finished else None

    return await wait_for(done, timeout=20, message="the task to finish")


async def test_too_many_rejects_fails_the_task_not_retryable_and_keeps_the_rejects(
    runner: TaskRunner, warehouse_dir: Path
) -> None:
    task = await run_ods(runner, job_params(reject_limit=0.2))

    public = task_public(task)
    assert public.status == "failed"
    assert (public.reason, public.retryable) == ("TooManyRejects", False)
    assert public.error == ("ods: 1 of 4 rows rejected (25.00%), more than its reject_limit "
                            "20.00%")
    assert public.result is not None and (public.result["rows"], public.result["rejects"]) == (3, 1)
    assert public.result["path"] is None and public.result["rejects_path"].endswith("ods_rejects")
    job_dir = warehouse_dir / "job-1"
    assert not (job_dir / "ods").exists()  # a failed stage leaves no layer …
    assert [p.suffix for p in (job_dir / "ods_rejects").iterdir()] == [".parquet"]  # … but this
    assert not list(job_dir.glob(".tmp-*"))


async def test_schema_drift_with_fail_fails_the_task_naming_the_columns(
    runner: TaskRunner,
) -> None:
    contract = {"columns": {"device_id": "text", "reading": "int", "site": "varchar"}}
    task = await run_ods(runner, job_params(contract=contract))

    public = task_public(task)
    assert (public.status, public.reason, public.retryable) == ("failed", "SchemaDrift", False)
    assert public.error == ("ods: the output does not match its contract: missing site "
                            "(VARCHAR); retyped reading (INTEGER → DOUBLE)")


async def test_schema_drift_with_warn_completes_with_a_warning(
    runner: TaskRunner, warehouse_dir: Path
) -> None:
    contract = {"columns": {"device_id": "VARCHAR"}, "on_drift": "warn"}
    task = await run_ods(runner, job_params(contract=contract, reject_limit=0.5))

    public = task_public(task)
    assert (public.status, public.reason, public.retryable) == ("completed", None, True)
    assert public.result is not None and public.result["warnings"] == [{
        "reason": "SchemaDrift",
        "message": "ods: the output does not match its contract: added reading (DOUBLE)"}]
    assert (warehouse_dir / "job-1" / "ods").is_dir()


async def test_an_engine_failure_stays_retryable(runner: TaskRunner) -> None:
    params = job_params()
    params = params.model_copy(update={"source": params.source.model_copy(
        update={"path": "nothing/*.csv"})})
    task = await run_ods(runner, params)

    public = task_public(task)
    assert (public.status, public.reason, public.retryable) == ("failed", None, True)
