"""Dependencies of the routes, as `Annotated` aliases, over the app's typed `Services`.

Each alias is one dependency with no sub-dependencies: FastAPI solves every dependency of every
request anew, at a cost comparable to the job GET's whole database read, so the caller is
authenticated in the bearer scheme's own call and the services are read from the request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from app.api.security import Principal
from app.container import Services
from app.domain.owners import LOCAL_OWNER
from app.problems import ProblemError
from app.services.dry_runs import DryRunService
from app.services.jobs import JobService


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


class BearerPrincipal(HTTPBearer):
    """The OpenAPI bearer scheme, whose call answers the authenticated caller."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        tokens = services_of(request.app).tokens
        if tokens is None:
            return Principal(LOCAL_OWNER, admin=True)
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        if not token or scheme.lower() != "bearer":
            raise ProblemError(401, "a bearer token is required",
                               headers={"WWW-Authenticate": "Bearer"})
        principal = tokens.authenticate(token)
        if principal is None:
            raise ProblemError(401, "the bearer token is not valid",
                               headers={"WWW-Authenticate": "Bearer"})
        return principal


get_principal = BearerPrincipal(auto_error=False, scheme_name="HTTPBearer",
                                description="A token from STRATA_API_TOKENS.")

Caller = Annotated[Principal, Depends(get_principal)]


async def get_jobs(request: Request) -> JobService:
    return services_of(request.app).jobs


Jobs = Annotated[JobService, Depends(get_jobs)]


async def get_dry_runs(request: Request) -> DryRunService:
    return services_of(request.app).dry_runs


DryRuns = Annotated[DryRunService, Depends(get_dry_runs)]
