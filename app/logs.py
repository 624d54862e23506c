"""Logging: JSON lines (or readable text on a terminal), request ids, secrets redacted.

Every record about a job carries `job_id`, `stage` and `task_id` when known (pass them with
`extra=`); every HTTP request gets an id (`X-Request-ID`, generated when absent) that its log lines
carry. Bearer tokens and configured secrets never reach a log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "job_context", default=MappingProxyType({}))

CONTEXT_FIELDS = ("job_id", "stage", "task_id", "owner")


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Every log line inside the block carries these fields (job_id, stage, task_id…)."""
    values = {k: v for k, v in fields.items() if v is not None}
    token = job_context.set({**job_context.get(), **values})
    try:
        yield
    finally:
        job_context.reset(token)


def bind(**fields: str | None) -> None:
    """Add fields to the current block's context (e.g. the task id once it is known)."""
    job_context.set({**job_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def _context_of(record: logging.LogRecord) -> dict[str, object]:
    found: dict[str, object] = dict(job_context.get())
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            found[name] = value
    return found
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


class RedactSecrets(logging.Filter):
    """Replaces bearer tokens and the configured secrets in messages and arguments."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        text = _BEARER.sub(r"\1[REDACTED]", text)
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        entry.update(_context_of(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={v}" for k, v in _context_of(record).items())
        rid = request_id.get()
        if rid:
            context = f"request_id={rid} {context}".strip()
        return f"{line} [{context}]" if context else line


def configure_logging(level: str = "INFO", fmt: str = "auto",
                      secrets: Iterable[str] = ()) -> None:
    """Install one handler on the root logger (uvicorn's loggers propagate to it)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


class RequestIdMiddleware:
    """Gives each request an id (the client's X-Request-ID if sane) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", given) else uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
