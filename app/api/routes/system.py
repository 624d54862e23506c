"""Liveness, readiness and the job state machine's diagram."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import Context
from app.api.schemas import FsmDiagram, FsmTransition, Health
from app.container import ReadinessCheck
from app.domain.fsm import diagram, initial_state, state_names, transitions
from app.domain.states import JobStatus

router = APIRouter(tags=["system"])


async def get_checks(ctx: Context) -> dict[str, ReadinessCheck]:
    return ctx.readiness


@router.get("/healthz", operation_id="healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", operation_id="readyz",
            responses={503: {"model": Health, "description": "A dependency is unreachable"}})
async def readyz(
    checks: Annotated[dict[str, ReadinessCheck], Depends(get_checks)],
) -> JSONResponse:
    """Ready to serve: the database and the executor answer."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await check()
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in results.values())
    body = Health(status="ok" if ok else "unavailable", checks=results)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/v1/fsm", operation_id="get_fsm", tags=["jobs"])
async def fsm(current: JobStatus | None = None) -> FsmDiagram:
    """The job state machine: its states and transitions as data, and a mermaid diagram
    (`current` highlights one state)."""
    return FsmDiagram(diagram=diagram(current.value if current else None),
                      states=state_names(), initial=initial_state(),
                      transitions=[FsmTransition(event=t.event, source=t.source, target=t.target)
                                   for t in transitions()])


@router.get("/metrics", operation_id="metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text format"}})
async def metrics(ctx: Context) -> Response:
    """Prometheus metrics (`strata_*`)."""
    await ctx.refresh_metrics()
    body = generate_latest(ctx.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
