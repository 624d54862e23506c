"""The hot read path serialises stored jobs without the response model; it must not drift."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from app.api.schemas import JobPublic, job_document, job_response
from app.domain import conditions as cond
from app.domain.params import JobParams
from app.store.models import Job


def stored_job(orders_job: dict[str, Any]) -> Job:
    now = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)
    conditions = cond.set_condition([], cond.SUSPENDED, cond.TRUE, "Suspended", "née ✓", now)
    return Job(
        id="0b9c6a8e-4b8a-4d0e-9d55-2a3c1f1e9a01", name="orders-daily", description="é",
        owner="local", status="DWDToDWS", suspend=True,
        params=JobParams.model_validate(orders_job["params"]).model_dump(mode="json"),
        results={"batch": {"task_id": "t1", "stage": "DWDToDWS", "progress": 41.5},
                 "layers": {"ods": {"rows": 10}, "dwd": {"rows": 9, "rejects": 1}}},
        conditions=conditions, attempt=2, created_at=now, updated_at=now + timedelta(seconds=3),
        started_at=now + timedelta(seconds=1), ended_at=None,
    )


def test_the_fast_document_is_the_response_models_document(orders_job: dict[str, Any]) -> None:
    job = stored_job(orders_job)
    expected = JobPublic.of(job).model_dump(mode="json")
    assert json.loads(job_response(job).body) == expected


def test_the_fast_document_validates_as_the_public_schema(orders_job: dict[str, Any]) -> None:
    document = json.loads(job_response(stored_job(orders_job)).body)
    assert JobPublic.model_validate(document).model_dump(mode="json") == document
    assert list(document) == list(JobPublic.model_fields)


def test_conditions_keep_their_timestamp_format(orders_job: dict[str, Any]) -> None:
    document = job_document(stored_job(orders_job))
    served = json.loads(job_response(stored_job(orders_job)).body)
    assert served["conditions"][0]["last_transition_time"] == "2026-11-28T12:00:00.123456Z"
    assert len(document["conditions"]) == 1
