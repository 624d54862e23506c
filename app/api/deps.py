"""Dependencies of the routes, as `Annotated` aliases, over the app's typed `Services`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.security import Principal
from app.container import Services
from app.domain.owners import LOCAL_OWNER
from app.problems import ProblemError
from app.services.dry_runs import DryRunService
from app.services.jobs import JobService

_bearer = HTTPBearer(auto_error=False, description="A token from STRATA_API_TOKENS.")


def install_services(app: FastAPI, services: Services) -> None:
    """Hand the app its services (the only write to `app.state`)."""
    app.state.services = services


def services_of(app: FastAPI) -> Services:
    """The services an app was built with, typed."""
    services = app.state.services
    assert isinstance(services, Services)
    return services


async def get_services(request: Request) -> Services:
    return services_of(request.app)


Context = Annotated[Services, Depends(get_services)]


async def get_principal(
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if ctx.tokens is None:
        return Principal(LOCAL_OWNER, admin=True)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ProblemError(401, "a bearer token is required",
                           headers={"WWW-Authenticate": "Bearer"})
    principal = ctx.tokens.authenticate(credentials.credentials)
    if principal is None:
        raise ProblemError(401, "the bearer token is not valid",
                           headers={"WWW-Authenticate": "Bearer"})
    return principal


Caller = Annotated[Principal, Depends(get_principal)]


async def get_jobs(ctx: Context) -> JobService:
    return ctx.jobs


Jobs = Annotated[JobService, Depends(get_jobs)]


async def get_dry_runs(ctx: Context) -> DryRunService:
    return ctx.dry_runs


DryRuns = Annotated[DryRunService, Depends(get_dry_runs)]
