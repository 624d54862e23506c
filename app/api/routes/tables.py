"""A pipeline's tables: the rows its Succeeded runs committed, at any version, and the history."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from app.api.deps import Caller, Context
from app.api.routes.pipelines import Name, Pipelines
from app.domain import layout
from app.problems import PROBLEM_RESPONSES
from app.store.layers import _csv_chunks, _json_chunks
from app.tables import delta

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"], responses=PROBLEM_RESPONSES)
LayerName = Annotated[str, Path(pattern="^(ods|dwd|dws|ds)$",
                                description="The layer whose table to read.")]


class TableVersion(BaseModel):
    version: int
    job_id: str | None = Field(description="The run that committed this version.")
    operation: str = Field(description="APPEND, MERGE or REPLACE PARTITIONS.")
    committed_at: datetime
    rows_added: int | None = Field(
        description="Rows the commit added: written by an append or a partition replace, "
                    "inserted by a merge (not the rows it updated).")


class TableHistory(BaseModel):
    versions: list[TableVersion] = Field(description="Newest first.")


@router.get("/{name}/tables/{layer}", operation_id="get_pipeline_table",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "The table's rows, streamed"}})
async def get_table(
    name: Name, layer: LayerName, caller: Caller, pipelines: Pipelines, ctx: Context,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    limit: Annotated[int, Query(ge=1, le=1_000_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
    version: Annotated[int | None, Query(ge=0, description="Time travel: read this version "
                                                          "(default: the latest).")] = None,
) -> StreamingResponse:
    """The rows the pipeline's Succeeded runs committed to this layer's table (Delta Lake)."""
    await pipelines.get(caller.owner, name)  # another owner's pipeline is a 404
    table = layout.table_dir(ctx.warehouse_dir, caller.owner, name, layer)
    names, batches = await asyncio.to_thread(delta.read, table, layer, version, limit, offset)
    chunks = _json_chunks(names, batches) if format == "json" else _csv_chunks(names, batches)
    media = "application/json" if format == "json" else "text/csv"
    return StreamingResponse(chunks, media_type=media)


@router.get("/{name}/tables/{layer}/history", operation_id="get_pipeline_table_history",
            response_model=TableHistory)
async def get_table_history(name: Name, layer: LayerName, caller: Caller,
                            pipelines: Pipelines, ctx: Context) -> TableHistory:
    """Every version of the table: which run committed it, how, and when."""
    await pipelines.get(caller.owner, name)
    table = layout.table_dir(ctx.warehouse_dir, caller.owner, name, layer)
    entries = await asyncio.to_thread(delta.history, table, layer)
    return TableHistory(versions=[TableVersion(**entry) for entry in entries])
