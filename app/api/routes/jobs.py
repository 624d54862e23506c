"""The `/v1/jobs` resource."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.api.deps import Caller, DryRuns, Jobs, services_of
from app.api.dry_run_schemas import DryRunPublic
from app.api.schemas import (
    EventList,
    EventPublic,
    JobCreate,
    JobList,
    JobPublic,
    JobUpdate,
    job_list_response,
    job_response,
)
from app.domain.errors import JobNotFound
from app.domain.states import STOPPED_STATUSES, JobStatus
from app.problems import PROBLEM_RESPONSES
from app.services.dry_runs import SAMPLE_ROWS_DEFAULT, SAMPLE_ROWS_MAX
from app.services.jobs import NewJob
from app.services.layers import layer_rows
from app.store.models import Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=PROBLEM_RESPONSES)

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200,
           description="Same key and body → the same job (200); same key, other body → 409."),
]

SampleRows = Annotated[int, Query(ge=1, le=SAMPLE_ROWS_MAX,
                                  description="Source rows a dry run reads.")]
DRY_RUN_DOC = ("Create nothing: run every layer on the first `sample_rows` source rows in a "
               "scratch folder and answer 200 with each layer's columns, counts and first rows.")


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_job",
             response_model=JobPublic,
             responses={200: {"model": JobPublic | DryRunPublic,
                              "description": "Replay of an earlier create (a job), or the "
                                             "result of a dry run"}})
async def create_job(
    body: JobCreate, caller: Caller, jobs: Jobs, dry_runs: DryRuns,
    idempotency_key: IdempotencyKey = None,
    dry_run: Annotated[bool, Query(description=DRY_RUN_DOC)] = False,
    sample_rows: SampleRows = SAMPLE_ROWS_DEFAULT,
) -> Response:
    """Submit a job; the watcher starts it at once. With `dry_run=true`, try it instead."""
    if dry_run:
        result = await dry_runs.dry_run(caller.owner, body.params, sample_rows=sample_rows)
        return JSONResponse(DryRunPublic.of(result).model_dump(mode="json"))
    new = NewJob(name=body.name, description=body.description, params=body.params,
                 suspend=body.suspend)
    job, created = await jobs.create(caller.owner, new, idempotency_key)
    return job_response(job, status.HTTP_201_CREATED if created else status.HTTP_200_OK,
                        headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("", operation_id="list_jobs", response_model=JobList)
async def list_jobs(
    caller: Caller,
    jobs: Jobs,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    pipeline: Annotated[str | None, Query(max_length=63, description="A pipeline's runs.")] = None,
) -> Response:
    """Jobs, newest first."""
    total, rows = await jobs.list_jobs(caller.scope, status=status_.value if status_ else None,
                                       name=name, limit=limit, offset=offset, pipeline=pipeline)
    return job_list_response(total, rows)


@router.get("/{job_id}", operation_id="get_job", response_model=JobPublic)
async def get_job(job_id: str, caller: Caller, request: Request) -> Response:
    # the service straight from the app, not as a dependency: the most polled route of the API
    # saves a dependency solve per request
    jobs = services_of(request.app).jobs
    return job_response(await jobs.read(caller.scope, job_id))


@router.patch("/{job_id}", operation_id="update_job")
async def update_job(job_id: str, body: JobUpdate, caller: Caller, jobs: Jobs) -> JobPublic:
    """Rename, describe, or suspend/resume a job."""
    changes = body.model_dump(exclude_unset=True)
    return JobPublic.of(await jobs.update(caller.scope, job_id, changes))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_job")
async def delete_job(job_id: str, caller: Caller, jobs: Jobs) -> Response:
    """Cancel the job's running task, if any, and delete the job and its events."""
    await jobs.delete(caller.scope, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _action(action: str, summary: str) -> None:
    async def act(job_id: str, caller: Caller, jobs: Jobs) -> JobPublic:
        return JobPublic.of(await jobs.act(caller.scope, job_id, action))

    act.__doc__ = summary
    router.add_api_route(f"/{{job_id}}/{action}", act, methods=["POST"],
                         operation_id=f"{action}_job", response_model=JobPublic,
                         summary=f"{action.capitalize()} a job", description=summary)


_action("cancel", "Stop the job: its running task is cancelled and it ends Cancelled.")
_action("suspend", "Stop advancing: the running task finishes, no new one starts.")
_action("resume", "Continue a suspended job.")
_action("retry", "Resume a Failed or Cancelled job at the stage that did not finish.")


@router.get("/{job_id}/events", operation_id="list_job_events")
async def list_events(job_id: str, caller: Caller, jobs: Jobs) -> EventList:
    """The job's transitions, oldest first."""
    rows = await jobs.events(caller.scope, job_id)
    return EventList(events=[EventPublic.of(e) for e in rows])


@router.get("/{job_id}/output", operation_id="get_job_output",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "DS rows, streamed"}})
async def get_output(
    job_id: str,
    caller: Caller,
    jobs: Jobs,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    limit: Annotated[int, Query(ge=1, le=1_000_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    """The data service: the DS rows of a Succeeded job, as JSON or CSV."""
    rows = await jobs.output(caller.scope, job_id, format, limit, offset)
    media = "application/json" if format == "json" else "text/csv"
    return StreamingResponse(rows, media_type=media)


LayerName = Annotated[Literal["ods", "dwd", "dws", "ds"],
                      Path(description="The layer: ods, dwd, dws or ds.")]
RowsFormat = Annotated[Literal["json", "csv"], Query()]
RowsLimit = Annotated[int, Query(ge=1, le=1_000_000)]
RowsOffset = Annotated[int, Query(ge=0)]


@router.get("/{job_id}/layers/{layer}", operation_id="get_job_layer",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "The layer's rows, streamed"}})
async def get_layer(
    job_id: str, layer: LayerName, caller: Caller, jobs: Jobs,
    format: RowsFormat = "json", limit: RowsLimit = 1000, offset: RowsOffset = 0,
) -> StreamingResponse:
    """Any written layer's rows, as JSON or CSV, paged like `/output`; 409 until it is written."""
    chunks = await layer_rows(jobs, caller.scope, job_id, layer,
                              fmt=format, limit=limit, offset=offset)
    return StreamingResponse(chunks, media_type=_MEDIA[format])


@router.get("/{job_id}/layers/{layer}/rejects", operation_id="get_job_layer_rejects",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "The rejected rows, with `_reject_reason`, streamed"}})
async def get_layer_rejects(
    job_id: str, layer: LayerName, caller: Caller, jobs: Jobs,
    format: RowsFormat = "json", limit: RowsLimit = 1000, offset: RowsOffset = 0,
) -> StreamingResponse:
    """The rows the layer's checks rejected, each with its `_reject_reason` (the failed check's
    name); a layer without checks has none. Readable also when the stage failed a gate."""
    chunks = await layer_rows(jobs, caller.scope, job_id, layer,
                              fmt=format, limit=limit, offset=offset, rejects=True)
    return StreamingResponse(chunks, media_type=_MEDIA[format])


_MEDIA = {"json": "application/json", "csv": "text/csv"}

WATCH_POLL_SECONDS = 0.2


async def _watched_job(job_id: str, caller: Caller, jobs: Jobs) -> Job:
    """Loaded in a dependency so an unknown job is a 404 before the stream starts."""
    return await jobs.get(caller.scope, job_id)


@router.get("/{job_id}/watch", operation_id="watch_job", response_class=EventSourceResponse,
            responses={200: {"description": "`job` events: the job as JSON at each change of "
                                            "state or progress; the stream ends when it stops"}})
async def watch_job(
    job: Annotated[Job, Depends(_watched_job)], caller: Caller, jobs: Jobs
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: each state change and progress update as it happens."""
    seen = -1
    while True:
        if job.version != seen:
            seen = job.version
            yield ServerSentEvent(event="job", id=str(job.version),
                                  data=JobPublic.of(job).model_dump(mode="json"))
            if job.status in STOPPED_STATUSES:
                return
        await asyncio.sleep(WATCH_POLL_SECONDS)
        try:
            job = await jobs.get(caller.scope, job.id)
        except JobNotFound:
            yield ServerSentEvent(event="deleted", data={"job_id": job.id})
            return
