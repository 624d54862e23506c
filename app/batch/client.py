"""The BatchManager client: create, poll and cancel executor tasks over HTTP.

It implements `app.batch.manager.BatchManager`; the bodies it sends and reads are the executor's
own (`app.contract.tasks`).

The `httpx.AsyncClient` is injected (its `base_url` points at an executor, e.g.
`http://127.0.0.1:8000/executor`), so tests swap in a `MockTransport` and the embedded default
calls its own process over loopback exactly as a cluster calls a remote executor.

Errors come out as one small tree, never as httpx exceptions:

    BatchError
    ├── ExecutorUnavailable   connection errors, timeouts, 5xx — after the retries ran out
    │   └── UnexpectedResponse  an answer that is not what the executor API returns
    ├── TaskNotFound          404: the executor does not know the task
    └── TaskRejected          any other 4xx (409 key reused, 422 invalid body, 401 …)

Every call is safe to retry: a create carries its idempotency key, a cancel is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

import app as strata
from app.contract.tasks import MAX_IDS_PER_POLL, TaskCreate, TaskPublic

log = logging.getLogger("strata.batch")


class BatchError(Exception):
    """Root of every error this client raises."""


class ExecutorUnavailable(BatchError):
    """The executor could not be reached or answered 5xx, on every attempt; try again later."""


class UnexpectedResponse(ExecutorUnavailable):
    """The executor answered something that is not its API's answer."""


class TaskNotFound(BatchError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"the executor has no task {task_id}")
        self.task_id = task_id


class TaskRejected(BatchError):
    """The executor refused the request (4xx); retrying the same request will not help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"executor refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail


class _ServerError(Exception):
    """A 5xx answer, raised inside the retry loop so tenacity retries it."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code} {_detail(response)}")
        self.response = response


def make_http_client(base_url: str, timeout: float = 10.0) -> httpx.AsyncClient:
    """An httpx client fit for calling an executor: bounded waits and a bounded pool."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10,
                            keepalive_expiry=30.0),
        headers={"User-Agent": f"strata-batch-client/{strata.__version__}",
                 "Accept": "application/json"},
    )


class BatchClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        token: str | None = None,
        retry_attempts: int = 3,
        retry_wait: float = 0.1,
        retry_max_wait: float = 5.0,
    ) -> None:
        if retry_attempts < 1:
            raise ValueError("retry_attempts must be at least 1")
        self.http = http
        self.retry_attempts = retry_attempts
        self.retry_wait = retry_wait
        self.retry_max_wait = retry_max_wait
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def create_task(self, task: TaskCreate) -> TaskPublic:
        """Create the task, or get the one the executor already has for its idempotency key."""
        response = await self._request("POST", "/v1/tasks", json=task.wire_body())
        self._raise_for_client_error(response)
        return _task(response)

    async def get_task_status(self, task_id: str) -> TaskPublic:
        response = await self._request("GET", _task_path(task_id))
        self._raise_for_client_error(response, task_id)
        return _task(response)

    async def get_tasks(self, task_ids: Sequence[str]) -> list[TaskPublic]:
        """The tasks among `task_ids` the executor knows: `GET /v1/tasks?ids=…`, one request per
        `MAX_IDS_PER_POLL` ids."""
        found: list[TaskPublic] = []
        ids = list(dict.fromkeys(task_ids))
        for start in range(0, len(ids), MAX_IDS_PER_POLL):
            chunk = ids[start:start + MAX_IDS_PER_POLL]
            response = await self._request("GET", "/v1/tasks", params={"ids": chunk})
            self._raise_for_client_error(response)
            found += _tasks(response)
        return found

    async def cancel_task(self, task_id: str) -> TaskPublic | None:
        """Cancel the task (a finished one is returned unchanged); None if it is unknown."""
        response = await self._request("DELETE", _task_path(task_id))
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        self._raise_for_client_error(response, task_id)
        return _task(response)

    async def list_tasks(self, job_id: str) -> list[TaskPublic]:
        """A job's tasks, oldest first."""
        response = await self._request("GET", "/v1/tasks", params={"job_id": job_id})
        self._raise_for_client_error(response)
        return _tasks(response)

    async def healthy(self) -> bool:
        """One quick `GET /healthz`, no retries: for readiness checks."""
        try:
            response = await self.http.get("/healthz", headers=self._headers)
        except httpx.HTTPError:
            return False
        return response.status_code == httpx.codes.OK

    # --- plumbing ------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with retries on connection errors, timeouts and 5xx (exponential backoff with
        jitter); raise ExecutorUnavailable when they run out."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry_attempts),
            wait=wait_exponential(multiplier=self.retry_wait, max=self.retry_max_wait)
            + wait_random(0, self.retry_wait),
            retry=retry_if_exception_type((httpx.TransportError, _ServerError)),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(self._send, method, path, **kwargs)
        except _ServerError as exc:
            raise ExecutorUnavailable(
                f"executor answered {method} {path} with {exc} "
                f"({self.retry_attempts} attempt(s))"
            ) from None
        except httpx.TransportError as exc:
            raise ExecutorUnavailable(
                f"executor at {self.http.base_url} unreachable: {type(exc).__name__}: {exc} "
                f"({self.retry_attempts} attempt(s))"
            ) from exc
        return response

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, headers=self._headers, **kwargs)
        if response.status_code >= 500:
            raise _ServerError(response)
        return response

    @staticmethod
    def _raise_for_client_error(response: httpx.Response, task_id: str | None = None) -> None:
        if response.status_code == httpx.codes.NOT_FOUND and task_id is not None:
            raise TaskNotFound(task_id)
        if response.status_code >= 400:
            raise TaskRejected(response.status_code, _detail(response))


def _task_path(task_id: str) -> str:
    return f"/v1/tasks/{quote(task_id, safe='')}"


def _task(response: httpx.Response) -> TaskPublic:
    try:
        return TaskPublic.model_validate_json(response.content)
    except ValidationError as exc:
        raise UnexpectedResponse(
            f"executor answered {response.status_code} without a task: {exc.errors()[:1]}"
        ) from exc


def _tasks(response: httpx.Response) -> list[TaskPublic]:
    try:
        return [TaskPublic.model_validate(t) for t in response.json()["tasks"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UnexpectedResponse(f"not a task list: {exc}") from exc


def _detail(response: httpx.Response) -> str:
    """The problem+json `detail` (or `title`), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title")
        if detail:
            return str(detail)
    return response.text[:200]


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("executor call failed (attempt %d): %s; retrying", state.attempt_number, exc)
