"""The one table that turns domain errors into problem+json responses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from app.domain.errors import (
    ConcurrentUpdate,
    IdempotencyConflict,
    IllegalAction,
    JobNotFound,
    LandingPathRefused,
    LandingPathTaken,
    LayerNotWritten,
    OutputNotReady,
    TooManyRequests,
)
from app.domain.inputs import InputsTaken, NoNewInput, PipelineOnly
from app.domain.pipelines import (
    BackfillNotFound,
    BackfillRefused,
    ParameterProblem,
    PipelineNotFound,
)
from app.domain.webhooks import UrlRefused, WebhookNotFound
from app.problems import FieldError, problem_response
from app.services.dry_runs import DryRunRefused
from app.store.landing import UploadTooLarge
from app.tables.delta import TableNotFound


def _handler(status: int, title: str, field: str | None = None) -> Callable[..., Any]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        errors = [FieldError(field=field, message=str(exc))] if field else None
        return problem_response(status, str(exc), title=title, errors=errors)

    return handle


DOMAIN_ERROR_HANDLERS: dict[type[Exception], Callable[..., Any]] = {
    JobNotFound: _handler(404, "Job not found"),
    IllegalAction: _handler(409, "Action not allowed in this state"),
    IdempotencyConflict: _handler(409, "Idempotency-Key reused with another body"),
    ConcurrentUpdate: _handler(409, "Concurrent update"),
    OutputNotReady: _handler(409, "Output not ready"),
    LayerNotWritten: _handler(409, "Layer not written"),
    LandingPathRefused: _handler(422, "Landing path refused", field="path"),
    LandingPathTaken: _handler(409, "Landing path taken", field="path"),
    UploadTooLarge: _handler(413, "Upload too large"),
    WebhookNotFound: _handler(404, "Webhook not found"),
    UrlRefused: _handler(422, "Webhook URL refused", field="body.url"),
}


async def _too_many(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TooManyRequests)
    return problem_response(429, str(exc), title="Too many requests",
                            headers={"Retry-After": str(exc.retry_after)})


DOMAIN_ERROR_HANDLERS[TooManyRequests] = _too_many


async def _bad_parameters(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ParameterProblem)
    errors = [FieldError(field=field, message=message) for field, message in exc.problems]
    return problem_response(422, str(exc), title="Invalid run parameters", errors=errors)


async def _backfill_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BackfillRefused)
    return problem_response(422, str(exc), title="Backfill refused",
                            errors=[FieldError(field=exc.field, message=str(exc))])


async def _input_conflict(request: Request, exc: Exception) -> JSONResponse:
    """409 with a `reason` member, so a client tells "nothing new" from "taken" without
    parsing the detail."""
    assert isinstance(exc, NoNewInput | InputsTaken)
    response = problem_response(409, str(exc), title="No input for this run")
    body = json.loads(bytes(response.body))
    return JSONResponse({**body, "reason": exc.reason}, status_code=409,
                        media_type=response.media_type)


async def _pipeline_only(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PipelineOnly)
    return problem_response(422, str(exc), title="Only a pipeline can do this",
                            errors=[FieldError(field=exc.field, message=str(exc))])


DOMAIN_ERROR_HANDLERS.update({
    TableNotFound: _handler(404, "Table not found"),
    NoNewInput: _input_conflict,
    InputsTaken: _input_conflict,
    PipelineOnly: _pipeline_only,
    PipelineNotFound: _handler(404, "Pipeline not found"),
    BackfillNotFound: _handler(404, "Backfill not found"),
    ParameterProblem: _bad_parameters,
    BackfillRefused: _backfill_refused,
})


async def _dry_run_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DryRunRefused)
    return problem_response(422, str(exc), title="Dry run refused",
                            errors=[FieldError(field=exc.field, message=exc.message)])


DOMAIN_ERROR_HANDLERS[DryRunRefused] = _dry_run_refused
