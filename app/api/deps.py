"""Dependencies of the routes, as `Annotated` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.security import Principal, TokenTable
from app.domain.owners import LOCAL_OWNER
from app.problems import ProblemError
from app.services.jobs import JobService

_bearer = HTTPBearer(auto_error=False, description="A token from STRATA_API_TOKENS.")


@dataclass
class ApiContext:
    """What the routes need, built once by the app factory."""

    jobs: JobService
    tokens: TokenTable | None
    landing_dir: Path
    warehouse_dir: Path
    max_upload_bytes: int

    def landing_for(self, principal: Principal) -> Path:
        """The caller's own landing space."""
        scope = principal.landing_scope
        return self.landing_dir / scope if scope else self.landing_dir


async def get_context(request: Request) -> ApiContext:
    ctx = request.app.state.api
    assert isinstance(ctx, ApiContext)
    return ctx


Context = Annotated[ApiContext, Depends(get_context)]


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
