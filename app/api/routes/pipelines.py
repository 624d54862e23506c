"""The `/v1/pipelines` resource: versioned job templates, their runs, schedules and backfills."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status
from fastapi.responses import JSONResponse

from app.api.deps import Caller, Context, DryRuns
from app.api.dry_run_schemas import DryRunPublic
from app.api.pipeline_schemas import (
    BackfillCreate,
    BackfillPublic,
    PipelineList,
    PipelinePublic,
    RunCreate,
    VersionList,
    VersionPublic,
    parse_moment,
)
from app.api.routes.jobs import DRY_RUN_DOC, IdempotencyKey, SampleRows
from app.api.schemas import JobPublic, job_response
from app.domain.pipelines import PIPELINE_NAME, BackfillRefused, PipelineSpec
from app.problems import PROBLEM_RESPONSES
from app.services.dry_runs import SAMPLE_ROWS_DEFAULT
from app.services.pipelines import PipelineService

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"], responses=PROBLEM_RESPONSES)


async def get_pipelines(ctx: Context) -> PipelineService:
    return ctx.pipelines


Pipelines = Annotated[PipelineService, Depends(get_pipelines)]
Name = Annotated[str, Path(pattern=PIPELINE_NAME, max_length=63, description="Unique per owner.")]


@router.put("/{name}", operation_id="put_pipeline", response_model=PipelinePublic,
            status_code=status.HTTP_200_OK,
            responses={201: {"model": PipelinePublic, "description": "Created"}})
async def put_pipeline(name: Name, body: PipelineSpec, caller: Caller, pipelines: Pipelines,
                       response: Response) -> PipelinePublic:
    """Create (201) or replace (200, a new version); the same body again changes nothing."""
    view, created = await pipelines.apply(caller.owner, name, body)
    if created:
        response.status_code = status.HTTP_201_CREATED
        response.headers["Location"] = f"/v1/pipelines/{name}"
    return PipelinePublic.of(view)


@router.get("", operation_id="list_pipelines", response_model=PipelineList)
async def list_pipelines(
    caller: Caller, pipelines: Pipelines,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> PipelineList:
    """The caller's pipelines, by name."""
    total, views = await pipelines.list_pipelines(caller.owner, limit=limit, offset=offset)
    return PipelineList(total=total, pipelines=[PipelinePublic.of(v) for v in views])


@router.get("/{name}", operation_id="get_pipeline", response_model=PipelinePublic)
async def get_pipeline(name: Name, caller: Caller, pipelines: Pipelines) -> PipelinePublic:
    """One pipeline with its next fire time and latest ticks."""
    return PipelinePublic.of(await pipelines.get(caller.owner, name))


@router.get("/{name}/versions", operation_id="list_pipeline_versions",
            response_model=VersionList)
async def list_versions(name: Name, caller: Caller, pipelines: Pipelines) -> VersionList:
    """Every version, newest first."""
    _, versions = await pipelines.versions(caller.owner, name)
    return VersionList(versions=[VersionPublic.of(v) for v in versions])


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT,
               operation_id="delete_pipeline")
async def delete_pipeline(name: Name, caller: Caller, pipelines: Pipelines) -> Response:
    """Stop its schedule and delete it; the jobs it made stay."""
    await pipelines.delete(caller.owner, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/suspend", operation_id="suspend_pipeline", response_model=PipelinePublic)
async def suspend_pipeline(name: Name, caller: Caller, pipelines: Pipelines) -> PipelinePublic:
    """Pause the schedule (manual runs and backfills still work)."""
    return PipelinePublic.of(await pipelines.set_suspend(caller.owner, name, True))


@router.post("/{name}/resume", operation_id="resume_pipeline", response_model=PipelinePublic)
async def resume_pipeline(name: Name, caller: Caller, pipelines: Pipelines) -> PipelinePublic:
    """Resume the schedule from now on (ticks while it was paused do not run)."""
    return PipelinePublic.of(await pipelines.set_suspend(caller.owner, name, False))


@router.post("/{name}/runs", status_code=status.HTTP_201_CREATED, operation_id="run_pipeline",
             response_model=JobPublic,
             responses={200: {"model": JobPublic | DryRunPublic,
                              "description": "Replay of an earlier run, or a dry run"}})
async def run_pipeline(
    name: Name, caller: Caller, pipelines: Pipelines, dry_runs: DryRuns,
    body: RunCreate | None = None, idempotency_key: IdempotencyKey = None,
    dry_run: Annotated[bool, Query(description=DRY_RUN_DOC)] = False,
    sample_rows: SampleRows = SAMPLE_ROWS_DEFAULT,
) -> Response:
    """Run the current version now with these parameters: a normal job, which records them.
    With `dry_run=true`, try the run on a sample instead."""
    given = body.parameters if body is not None else {}
    if dry_run:
        params, values = await pipelines.plan_run(caller.owner, name, given)
        result = await dry_runs.dry_run(caller.owner, params, values, sample_rows=sample_rows)
        return JSONResponse(DryRunPublic.of(result).model_dump(mode="json"))
    job, created = await pipelines.run(caller.owner, name, given, idempotency_key)
    return job_response(job, status.HTTP_201_CREATED if created else status.HTTP_200_OK,
                        headers={"Location": f"/v1/jobs/{job.id}"})


@router.post("/{name}/backfills", status_code=status.HTTP_201_CREATED,
             operation_id="create_backfill", response_model=BackfillPublic)
async def create_backfill(name: Name, body: BackfillCreate, caller: Caller,
                          pipelines: Pipelines, response: Response) -> BackfillPublic:
    """One run per schedule tick in [start, end] that has none yet, `max_active` at a time."""
    view = await pipelines.get(caller.owner, name)
    timezone = view.spec.timezone
    try:
        start = parse_moment(body.start, timezone, end=False)
        end = parse_moment(body.end, timezone, end=True)
    except ValueError as exc:  # checked by the body model; the timezone cannot make it fail
        raise BackfillRefused("start", str(exc)) from None
    backfill = await pipelines.backfill(caller.owner, name, start, end, body.max_active)
    response.headers["Location"] = f"/v1/pipelines/{name}/backfills/{backfill.backfill.id}"
    return BackfillPublic.of(backfill)


@router.get("/{name}/backfills/{backfill_id}", operation_id="get_backfill",
            response_model=BackfillPublic)
async def get_backfill(name: Name, backfill_id: Annotated[str, Path(max_length=36)],
                       caller: Caller, pipelines: Pipelines) -> BackfillPublic:
    """The backfill's ticks, their runs and the runs' statuses."""
    return BackfillPublic.of(await pipelines.get_backfill(caller.owner, name, backfill_id))
