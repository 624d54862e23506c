"""The app factory: API + watcher, and in the embedded default the executor on the same port.

In the embedded default the executor app is mounted under `/executor` and the BatchManager client
calls it over loopback HTTP, so the laptop demo runs the same code path as a cluster. The services
themselves are built in `app.container`; this module only assembles the HTTP app around them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import app
from app.api.deps import install_services
from app.api.errors import DOMAIN_ERROR_HANDLERS
from app.api.routes import jobs, landing, pipelines, system, tables, ui, webhooks
from app.api.security import TokenTable
from app.container import Services, build_services, run_services
from app.executor.app import create_executor_app
from app.logs import RequestIdMiddleware
from app.problems import PlainErrorsAsProblems, install_problem_handlers, use_problem_schemas
from app.settings import Settings

DESCRIPTION = """Strata runs data-layer jobs: POST a job, and a watcher moves its data through
Landing → ODS → DWD → DWS → DS one durable stage at a time. Poll the job, read its events, and
read the served DS rows when it has Succeeded. Errors are RFC 9457 problem+json."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> TokenTable | None:
    """The token table; refuse to serve beyond loopback without one."""
    tokens = TokenTable.parse(settings.api_tokens, settings.admin_owners)
    if tokens is None and not is_loopback(settings.host):
        raise RuntimeError(
            f"refusing to serve on {settings.host} without STRATA_API_TOKENS: "
            "set tokens, or bind to 127.0.0.1"
        )
    return tokens


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing is opened or created until its lifespan starts."""
    settings = settings or Settings()
    services = build_services(settings, check_exposure(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with run_services(services):
            yield

    api = FastAPI(title="Strata", version=app.__version__, description=DESCRIPTION,
                  lifespan=lifespan, max_body_size=settings.max_body_bytes)
    api.add_middleware(RequestIdMiddleware)
    # outermost, so the body limiter's plain-text 413 becomes a problem document too
    build_stack = api.build_middleware_stack
    api.build_middleware_stack = lambda: PlainErrorsAsProblems(build_stack())  # type: ignore[method-assign]
    install_services(api, services)
    install_problem_handlers(api, DOMAIN_ERROR_HANDLERS)
    use_problem_schemas(api)
    _include_routes(api, services)
    return api


def _include_routes(api: FastAPI, services: Services) -> None:
    api.include_router(jobs.router)
    api.include_router(pipelines.router)
    api.include_router(tables.router)
    api.include_router(landing.router)
    api.include_router(system.router)
    api.include_router(ui.router)
    api.include_router(webhooks.router)
    if services.executor is not None:
        api.mount("/executor", create_executor_app(services.executor))
