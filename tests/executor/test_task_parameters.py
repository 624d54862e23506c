"""A task's typed run parameters: sent by the client, checked and stored by the executor, and
bound by the engine as values (never spliced into SQL)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contract.tasks import TaskCreate
from app.executor.engine.duckdb_engine import DuckDBEngine
from app.executor.tasks import TaskStore
from tests.batch.test_client import TASK_JSON, mock_client
from tests.executor.engine.stages import rows_of
from tests.executor.test_executor_api import (
    assert_problem,
    body,
    finished,
    running_executor,
)
from tests.executor.test_runner import PARAMS, ProgressEngine

DAY = {"type": "date", "value": "2024-05-02"}


async def test_a_task_stores_its_parameters_and_the_engine_gets_python_values(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    engine = ProgressEngine()
    parameters = {"day": DAY, "region": {"type": "string", "value": "eu'; DROP TABLE x; --"}}
    async with running_executor(sessions, engine, tmp_path) as client:
        created = await client.post("/v1/tasks", json=body(parameters=parameters))
        assert created.status_code == 201, created.text
        done = await finished(client, created.json()["task_id"])

    assert done["status"] == "completed"
    assert engine.requests[0].parameters == {
        "day": dt.date(2024, 5, 2),
        "region": "eu'; DROP TABLE x; --",
    }
    stored = await TaskStore(sessions).get(done["task_id"])
    assert stored is not None and stored.parameters == parameters


async def test_a_task_without_parameters_binds_none(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    engine = ProgressEngine()
    async with running_executor(sessions, engine, tmp_path) as client:
        created = await client.post("/v1/tasks", json=body())
        await finished(client, created.json()["task_id"])

    assert engine.requests[0].parameters == {}
    stored = await TaskStore(sessions).get(created.json()["task_id"])
    assert stored is not None and stored.parameters is None


async def test_a_date_parameter_filters_ods_through_the_executor(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    orders = tmp_path / "landing" / "orders"
    orders.mkdir(parents=True)
    (orders / "o.csv").write_text("order_id,day\n1,2024-05-01\n2,2024-05-02\n3,2024-05-03\n")
    params = {**PARAMS, "layers": {"ods": {"sql": "SELECT * FROM landing WHERE day >= $day"}}}
    async with running_executor(sessions, DuckDBEngine(), tmp_path) as client:
        created = await client.post(
            "/v1/tasks", json=body(params=params, parameters={"day": DAY})
        )
        done = await finished(client, created.json()["task_id"])

    assert done["status"] == "completed", done["error"]
    assert [r["order_id"] for r in rows_of(Path(done["result"]["path"]))] == [2, 3]


async def test_a_mistyped_or_misnamed_parameter_is_422_naming_it(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"day": {"type": "date", "value": "not a date"}}, "body.parameters.day"),
        ({"day": {"type": "weekday", "value": "monday"}}, "body.parameters.day.type"),
        ({"n": {"type": "integer", "value": [1]}}, "body.parameters.n"),
        ({"Bad Name": DAY}, "body.parameters.Bad Name"),
    ]
    async with running_executor(sessions, ProgressEngine(), tmp_path) as client:
        for parameters, field in cases:
            response = await client.post("/v1/tasks", json=body(parameters=parameters))
            problem = assert_problem(response, 422)
            fields = [e["field"] for e in problem["errors"]]
            assert any(f.startswith(field) for f in fields), (parameters, fields)


async def test_the_client_sends_parameters_only_when_there_are_some() -> None:
    batch, seen = mock_client(lambda request: httpx.Response(201, json=TASK_JSON))
    try:
        first = {"job_id": "job-1", "stage": "LandingToODS", "attempt": 1, "params": PARAMS}
        await batch.create_task(TaskCreate.model_validate({**first, "idempotency_key": "k1"}))
        await batch.create_task(TaskCreate.model_validate(
            {**first, "idempotency_key": "k2", "parameters": {"day": DAY}}))
    finally:
        await batch.http.aclose()

    sent = [httpx.Response(200, content=request.content).json() for request in seen]
    assert "parameters" not in sent[0]
    assert sent[1]["parameters"] == {"day": DAY}
