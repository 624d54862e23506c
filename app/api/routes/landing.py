"""Landing uploads: raw files streamed into the landing directory, and a listing."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query, Request, Response, status

from app.api.deps import Caller, Context
from app.api.schemas import LandingFilePublic, LandingList
from app.problems import PROBLEM_RESPONSES
from app.services.inputs import record_upload
from app.store import landing
from app.store.db import transaction
from app.store.landing import LANDING_PATH_PATTERN, MAX_PATH_LENGTH
from app.store.types import utcnow

# uploads are streamed and capped by STRATA_MAX_UPLOAD_BYTES while they are written, not by the
# app-wide JSON body limit
UNBOUNDED = 2**62
# The pattern documents the names the store accepts; the store checks them itself, with a message
# that says which rule a name breaks.
LandingPath = Annotated[str, Path(
    description="Where the file lands, relative to your landing directory: segments joined by "
                "'/', none hidden ('.'), no glob characters.",
    json_schema_extra={"pattern": LANDING_PATH_PATTERN, "maxLength": MAX_PATH_LENGTH})]
router = APIRouter(prefix="/v1/landing", tags=["landing"], responses=PROBLEM_RESPONSES)


@router.put(
    "/{path:path}", operation_id="put_landing_file", status_code=status.HTTP_201_CREATED,
    max_body_size=UNBOUNDED,
    responses={200: {"model": LandingFilePublic, "description": "An existing file was replaced"}},
    openapi_extra={"requestBody": {
        "description": "The file's bytes; an empty body lands an empty file (a marker such as "
                       "`_SUCCESS`, or a day with no rows).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "required": False}},
)
async def put_file(path: LandingPath, request: Request, caller: Caller, ctx: Context,
                   response: Response) -> LandingFilePublic:
    """Upload one raw file (streamed, never buffered whole); replaces a file of the same path."""
    landed, created = await landing.write_stream(
        ctx.landing_for(caller), path, request.stream(), ctx.max_upload_bytes)
    assert landed.sha256 is not None
    async with transaction(ctx.jobs.sessions) as session:  # the landing manifest
        await record_upload(session, caller.owner, landed.path, landed.size, landed.sha256,
                            landed.modified_at, utcnow())
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return LandingFilePublic.of(landed)


@router.get("", operation_id="list_landing_files")
async def list_files(
    caller: Caller, ctx: Context,
    prefix: Annotated[str | None, Query(max_length=1024)] = None,
) -> LandingList:
    """What has landed, by path."""
    files = await anyio.to_thread.run_sync(landing.list_files, ctx.landing_for(caller), prefix)
    return LandingList(files=[LandingFilePublic.of(f) for f in files])
