"""The in-process BatchManager answers as the HTTP client does: the same documents, the same
errors, against the real executor service."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.batch.client import TaskNotFound, TaskRejected
from app.contract.tasks import TaskStatus
from app.executor.app import ExecutorService
from app.executor.local import LocalBatchManager
from tests.batch.test_client import task
from tests.executor.test_runner import ProgressEngine
from tests.waiting import wait_for


async def test_the_local_manager_drives_a_task_through_the_executor_of_this_process(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    service = ExecutorService(sessions, ProgressEngine(), landing_dir=tmp_path / "landing",
                              warehouse_dir=tmp_path / "warehouse", sweep_interval=60.0)
    batch = LocalBatchManager(service)
    assert not await batch.healthy()
    await service.start()
    try:
        assert await batch.healthy()
        created = await batch.create_task(task())
        again = await batch.create_task(task())
        assert again.task_id == created.task_id

        async def completed() -> bool:
            return (await batch.get_task_status(created.task_id)).status is TaskStatus.COMPLETED

        await wait_for(completed, 10, message="the task to complete")
        [polled] = await batch.get_tasks([created.task_id, "no-such-task"])
        assert polled == await batch.get_task_status(created.task_id)
        assert polled.result is not None and polled.result["rows"] == 100
        assert [t.task_id for t in await batch.list_tasks("job-1")] == [created.task_id]
        assert await batch.cancel_task("no-such-task") is None
        with pytest.raises(TaskNotFound):
            await batch.get_task_status("no-such-task")
        with pytest.raises(TaskRejected) as reused:
            await batch.create_task(task(attempt=2))
        assert reused.value.status == 409 and created.task_id in reused.value.detail
    finally:
        await service.stop(grace=0)
