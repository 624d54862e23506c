"""The dashboard at /ui: plain HTML, CSS and JavaScript shipped in `app/ui/static`.

No build step and no external URL: the page, its script (ES modules, loaded by the browser one
file at a time) and its stylesheet are files of the package, served here with a
Content-Security-Policy that allows only this origin. The page talks to the public API
(`/v1/...`) like any other client. None of these routes is in the OpenAPI schema.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

import app

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(app.__file__).resolve().parent / "ui" / "static"
JS = "text/javascript; charset=utf-8"
# The files the page may load, by name: the script is ES modules (app.js imports the rest).
ASSETS = {
    **{f"{module}.js": JS for module in (
        "app", "api", "auth", "dom", "format", "fsm-view", "job-layers", "job-output", "job-page",
        "job-sections", "job-try", "jobs", "jobs-list", "live", "pipeline-tables", "pipelines",
        "router", "webhooks")},
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _page() -> Response:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers=SECURITY_HEADERS)


@router.get("/ui")
async def dashboard() -> Response:
    """The job list (the page routes itself on the client)."""
    return _page()


@router.get("/")
async def root() -> RedirectResponse:
    """A person opening the service's address lands on the dashboard."""
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui/")
async def dashboard_slash() -> Response:
    return RedirectResponse("/ui", status_code=308)


@router.get("/ui/jobs/{job_id}")
async def dashboard_job(job_id: str) -> Response:
    """One job's page: the same document, which reads the job id from its address."""
    return _page()


@router.get("/ui/pipelines")
@router.get("/ui/pipelines/{name}")
@router.get("/ui/webhooks")
async def dashboard_pages(name: str = "") -> Response:
    """The pipelines and webhooks pages: the same document, routed on the client."""
    return _page()


@router.get("/ui/static/{name}")
async def dashboard_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        return Response(status_code=404, content="no such file", media_type="text/plain")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)
