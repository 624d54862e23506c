"""RFC 9457 problem details: the one error shape of every Strata HTTP API.

`install_problem_handlers` puts one table of exception handlers on an app, so routes raise domain
errors and never build error responses themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("strata.http")


class FieldError(BaseModel):
    field: str = Field(description="Where the problem is, e.g. body.params.retries.")
    message: str
    type: str | None = None


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """Raise from anywhere to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = type_
        self.headers = headers
        self.errors = errors


def problem_response(
    status: int,
    detail: str | None,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=type_, title=title or HTTPStatus(status).phrase, status=status, detail=detail,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_JSON,
        headers=headers,
    )


def _field_name(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validation_errors(errors: Sequence[Any]) -> list[FieldError]:
    out = []
    for err in errors:
        message = str(err.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        out.append(FieldError(field=_field_name(err.get("loc", ())), message=message,
                              type=err.get("type")))
    return out


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        detail = next(e.get("msg", "") for e in raw if e.get("type") == "json_invalid")
        return problem_response(400, f"request body is not valid JSON: {detail}",
                                title="Malformed JSON")
    errors = validation_errors(raw)
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return problem_response(422, summary, title="Validation failed", errors=errors)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return problem_response(exc.status_code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on this path: the router's 405 names only the first
    route's, and a path often has one route per method. Each method is asked of the router's
    own matching, so this stays true however the routes are included."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.status, exc.detail, title=exc.title, type_=exc.type,
                            errors=exc.errors, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal error; the service log has the details")


Handler = Callable[[Request, Exception], Any]


def install_problem_handlers(
    app: FastAPI, extra: dict[type[Exception], Handler] | None = None
) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(ProblemError, _on_problem)
    for exc_type, handler in (extra or {}).items():
        app.add_exception_handler(exc_type, handler)
    app.add_exception_handler(Exception, _on_unexpected)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": HTTPStatus(code).phrase}
    for code in (400, 401, 404, 409, 413, 422, 429)
}


def use_problem_schemas(app: FastAPI) -> None:
    """Make the OpenAPI say what the handlers do: every 4xx/5xx body is a Problem document."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = original()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in problem.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas["Problem"] = problem
        ref = {"$ref": "#/components/schemas/Problem"}
        for item in spec.get("paths", {}).values():
            for operation in item.values():
                for code, response in operation.get("responses", {}).items():
                    if code[0] in "45":
                        response["content"] = {PROBLEM_JSON: {"schema": ref}}
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


class PlainErrorsAsProblems:
    """Rewrites plain-text error responses made below the handlers (e.g. Starlette's body
    limit) as problem documents, so a client only ever parses one error shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                is_text = headers.get(b"content-type", b"").startswith(b"text/plain")
                if message["status"] >= 400 and is_text:
                    start = message
                    return
            elif start is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                status = int(start["status"])
                detail = b"".join(chunks).decode("utf-8", "replace").strip() or None
                response = problem_response(status, detail)
                await response({"type": "http"}, receive, send)
                return
            await send(message)

        await self.app(scope, receive, rewrite)
