"""A typed, synchronous Python client of Strata's public API (what `strata jobs …` uses).

    with StrataClient("http://127.0.0.1:8000") as strata:
        strata.put_landing("orders/orders_0001.csv", Path("orders_0001.csv"))
        job = strata.create_job(json.loads(Path("examples/orders_job.json").read_text()))
        job = strata.wait(job.job_id, on_update=lambda j: print(j.status))
        rows = strata.output_rows(job.job_id)

Responses are the service's own pydantic models, so a script sees exactly the documented shape.
Every non-2xx answer raises `StrataError` (or `NotFound`, `Conflict`, `Unauthorized`) built from
the problem+json body; a service that cannot be reached raises `Unreachable`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx

from app.api.dry_run_schemas import DryRunPublic
from app.api.pipeline_schemas import BackfillPublic, PipelineList, PipelinePublic, VersionList
from app.api.schemas import EventList, EventPublic, JobList, JobPublic, LandingFilePublic
from app.api.schemas import LandingList as _LandingList
from app.api.webhook_schemas import DeliveryList, WebhookCreated, WebhookList
from app.domain.states import STOPPED_STATUSES

__all__ = [
    "DEFAULT_URL",
    "Backfill",
    "Conflict",
    "DryRun",
    "Event",
    "Job",
    "JobDeleted",
    "JobList",
    "LandingFile",
    "NotFound",
    "Pipeline",
    "PipelineList",
    "StrataClient",
    "StrataError",
    "Unauthorized",
    "Unreachable",
]

DEFAULT_URL = "http://127.0.0.1:8000"

Job = JobPublic
DryRun = DryRunPublic
Event = EventPublic
LandingFile = LandingFilePublic
Pipeline = PipelinePublic
Backfill = BackfillPublic
OutputFormat = Literal["json", "csv"]


class StrataError(Exception):
    """The service answered with an error (an RFC 9457 problem document)."""

    def __init__(self, status: int, title: str, detail: str | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))

    @classmethod
    def from_response(cls, response: httpx.Response) -> StrataError:
        """The most specific error for this response; tolerant of bodies that are not problems."""
        title, detail, errors = response.reason_phrase or "HTTP error", None, None
        try:
            body = response.json()
        except ValueError:
            body = None
            detail = response.text.strip()[:500] or None
        if isinstance(body, dict):
            title = str(body.get("title") or title)
            raw_detail = body.get("detail")
            detail = raw_detail if isinstance(raw_detail, str) or raw_detail is None \
                else json.dumps(raw_detail)
            raw_errors = body.get("errors")
            errors = [e for e in raw_errors if isinstance(e, dict)] \
                if isinstance(raw_errors, list) else None
        kind = _BY_STATUS.get(response.status_code, cls)
        return kind(response.status_code, title, detail, errors)


class NotFound(StrataError):
    """404: no such job (or another owner's), or no such route."""


class Conflict(StrataError):
    """409: an action illegal in the job's state, a reused Idempotency-Key, output not ready."""


class JobDeleted(NotFound):
    """The job was deleted while it was being watched."""


class Unauthorized(StrataError):
    """401: no bearer token, or one the service does not know (set STRATA_TOKEN)."""


_BY_STATUS: dict[int, type[StrataError]] = {401: Unauthorized, 404: NotFound, 409: Conflict}


class Unreachable(ConnectionError):
    """The service could not be reached (refused, DNS, TLS, timed out): no answer to report."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach Strata at {url}: {reason}")


class StrataClient:
    """Strata's `/v1` API over one pooled httpx connection; use it as a context manager."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("STRATA_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("STRATA_TOKEN") or None
        headers = {"Accept": "application/json, application/problem+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)

    # -- plumbing ---------------------------------------------------------------------------

    def __enter__(self) -> StrataClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; raise StrataError on a non-2xx answer, Unreachable on no answer.

        The escape hatch for anything the typed methods do not cover (kwargs go to httpx).
        """
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(self.url, _reason(exc)) from exc
        if response.is_error:
            raise StrataError.from_response(response)
        return response

    # -- jobs -------------------------------------------------------------------------------

    def create_job(self, spec: dict[str, Any], idempotency_key: str | None = None) -> Job:
        """Submit `{"name", "params", …}`; with a key, a replay returns the first job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job.model_validate(self.request("POST", "/v1/jobs", json=spec,
                                               headers=headers).json())

    def dry_run(self, spec: dict[str, Any], sample_rows: int | None = None) -> DryRun:
        """Try `spec` on its first `sample_rows` source rows (default 1,000); nothing is created."""
        params: dict[str, Any] = {"dry_run": "true"}
        if sample_rows is not None:
            params["sample_rows"] = sample_rows
        return DryRun.model_validate(self.request("POST", "/v1/jobs", json=spec,
                                                  params=params).json())

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self.request("GET", _job(job_id)).json())

    def list_jobs(self, status: str | None = None, name: str | None = None, limit: int = 50,
                  offset: int = 0, pipeline: str | None = None) -> JobList:
        """Newest first; `total` counts every match, `jobs` holds one page."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = str(status)
        if name:
            params["name"] = name
        if pipeline:
            params["pipeline"] = pipeline
        return JobList.model_validate(self.request("GET", "/v1/jobs", params=params).json())

    def update_job(self, job_id: str, **changes: Any) -> Job:
        """PATCH `name`, `description` and/or `suspend`."""
        return Job.model_validate(self.request("PATCH", _job(job_id), json=changes).json())

    def delete_job(self, job_id: str) -> None:
        """Cancel its running task, if any, and delete the job with its events."""
        self.request("DELETE", _job(job_id))

    def cancel(self, job_id: str) -> Job:
        return self._act(job_id, "cancel")

    def suspend(self, job_id: str) -> Job:
        return self._act(job_id, "suspend")

    def resume(self, job_id: str) -> Job:
        return self._act(job_id, "resume")

    def retry(self, job_id: str) -> Job:
        return self._act(job_id, "retry")

    def _act(self, job_id: str, action: str) -> Job:
        return Job.model_validate(self.request("POST", f"{_job(job_id)}/{action}").json())

    # -- pipelines --------------------------------------------------------------------------

    def apply_pipeline(self, name: str, spec: dict[str, Any]) -> tuple[Pipeline, bool]:
        """PUT the pipeline: (it, True) when created; the same spec again keeps its version."""
        response = self.request("PUT", _pipeline(name), json=spec)
        return Pipeline.model_validate(response.json()), response.status_code == 201

    def get_pipeline(self, name: str) -> Pipeline:
        return Pipeline.model_validate(self.request("GET", _pipeline(name)).json())

    def list_pipelines(self, limit: int = 50, offset: int = 0) -> PipelineList:
        params = {"limit": limit, "offset": offset}
        return PipelineList.model_validate(self.request("GET", "/v1/pipelines",
                                                        params=params).json())

    def pipeline_versions(self, name: str) -> VersionList:
        return VersionList.model_validate(self.request("GET",
                                                       f"{_pipeline(name)}/versions").json())

    def delete_pipeline(self, name: str) -> None:
        """Stop its schedule and delete it; its jobs stay."""
        self.request("DELETE", _pipeline(name))

    def suspend_pipeline(self, name: str) -> Pipeline:
        return Pipeline.model_validate(self.request("POST", f"{_pipeline(name)}/suspend").json())

    def resume_pipeline(self, name: str) -> Pipeline:
        return Pipeline.model_validate(self.request("POST", f"{_pipeline(name)}/resume").json())

    def run_pipeline(self, name: str, parameters: dict[str, Any] | None = None,
                     idempotency_key: str | None = None) -> Job:
        """Run the pipeline now: a job recording its parameters."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = self.request("POST", f"{_pipeline(name)}/runs",
                                json={"parameters": parameters or {}}, headers=headers)
        return Job.model_validate(response.json())

    def backfill(self, name: str, start: str, end: str, max_active: int = 2) -> Backfill:
        """One run per schedule tick in [start, end] (dates or RFC 3339 times)."""
        body = {"start": start, "end": end, "max_active": max_active}
        return Backfill.model_validate(self.request("POST", f"{_pipeline(name)}/backfills",
                                                    json=body).json())

    def get_backfill(self, name: str, backfill_id: str) -> Backfill:
        path = f"{_pipeline(name)}/backfills/{quote(backfill_id, safe='')}"
        return Backfill.model_validate(self.request("GET", path).json())

    def events(self, job_id: str) -> list[Event]:
        """The job's transitions, oldest first."""
        body = self.request("GET", f"{_job(job_id)}/events").json()
        return EventList.model_validate(body).events

    # -- output -----------------------------------------------------------------------------

    def iter_output(self, job_id: str, format: OutputFormat = "json", limit: int | None = None,
                    offset: int = 0, chunk_size: int = 65536) -> Iterator[bytes]:
        """The DS rows of a Succeeded job as streamed bytes (a JSON array or CSV).

        Streamed so a large output can go to a file without being held in memory.
        """
        yield from self._stream_rows(f"{_job(job_id)}/output", format, limit, offset, chunk_size)

    def output(self, job_id: str, format: OutputFormat = "json", limit: int | None = None,
               offset: int = 0) -> bytes:
        """The whole output document as bytes (see `output_rows` for parsed JSON rows)."""
        return b"".join(self.iter_output(job_id, format, limit, offset))

    def output_rows(self, job_id: str, limit: int | None = None,
                    offset: int = 0) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.output(job_id, "json", limit, offset))
        return rows

    def iter_layer(self, job_id: str, layer: str, format: OutputFormat = "json",
                   limit: int | None = None, offset: int = 0, *, rejects: bool = False,
                   chunk_size: int = 65536) -> Iterator[bytes]:
        """Any written layer's rows (or, with `rejects`, the rows its checks refused)."""
        path = f"{_job(job_id)}/layers/{quote(layer, safe='')}" + ("/rejects" if rejects else "")
        yield from self._stream_rows(path, format, limit, offset, chunk_size)

    def layer_rows(self, job_id: str, layer: str, limit: int | None = None, offset: int = 0,
                   *, rejects: bool = False) -> list[dict[str, Any]]:
        body = b"".join(self.iter_layer(job_id, layer, "json", limit, offset, rejects=rejects))
        rows: list[dict[str, Any]] = json.loads(body)
        return rows

    def rejects(self, job_id: str, layer: str, limit: int | None = None,
                offset: int = 0) -> list[dict[str, Any]]:
        """The layer's rejected rows, each with `_reject_reason` (the failed check's name)."""
        return self.layer_rows(job_id, layer, limit, offset, rejects=True)

    def reject_reasons(self, job_id: str, layer: str, page: int = 10_000) -> dict[str, int]:
        """How many rows each check rejected, most first (read page by page)."""
        counts: dict[str, int] = {}
        offset = 0
        while True:
            rows = self.rejects(job_id, layer, page, offset)
            for row in rows:
                reason = str(row.get("_reject_reason"))
                counts[reason] = counts.get(reason, 0) + 1
            if len(rows) < page:
                return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
            offset += page

    def _stream_rows(self, path: str, format: OutputFormat, limit: int | None, offset: int,
                     chunk_size: int) -> Iterator[bytes]:
        params: dict[str, Any] = {"format": format, "offset": offset}
        if limit is not None:
            params["limit"] = limit
        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.is_error:
                    response.read()
                    raise StrataError.from_response(response)
                yield from response.iter_bytes(chunk_size)
        except httpx.TransportError as exc:
            raise Unreachable(self.url, _reason(exc)) from exc

    # -- following a job --------------------------------------------------------------------

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[Job]:
        """Follow `GET /v1/jobs/{id}/watch` (SSE): the job at each change; ends when it stops.

        A stream that goes quiet or drops is reopened (the service sends the current job first,
        so nothing is missed). A job deleted while watched raises JobDeleted; a job not stopped
        after `timeout` seconds raises TimeoutError.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            read = max(self.timeout, 60.0)
            if deadline is not None:
                read = max(min(read, deadline - time.monotonic()), 0.05)
            last: Job | None = None
            try:
                with self._http.stream("GET", f"{_job(job_id)}/watch",
                                       timeout=httpx.Timeout(self.timeout, read=read),
                                       headers={"Accept": "text/event-stream"}) as response:
                    if response.is_error:
                        response.read()
                        raise StrataError.from_response(response)
                    for event, data in _sse_events(response.iter_lines()):
                        if event == "deleted":
                            raise JobDeleted(404, "Job deleted", f"job {job_id} was deleted")
                        if event == "job":
                            last = Job.model_validate_json(data)
                            yield last
                            if last.status in STOPPED_STATUSES:
                                return
                        _check(deadline, job_id, last)
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError):
                pass  # a quiet or dropped stream: reopen it
            except httpx.TransportError as exc:
                raise Unreachable(self.url, _reason(exc)) from exc
            else:
                time.sleep(0.2)  # the service ended the stream early: do not spin
            _check(deadline, job_id, last)

    def wait(self, job_id: str, timeout: float | None = None,
             on_update: Callable[[Job], None] | None = None,
             poll_interval: float = 1.0) -> Job:
        """Block until the job is Succeeded, Failed or Cancelled; return it as it ended.

        Follows the SSE stream; a service without one is polled every `poll_interval` seconds.
        `on_update` gets every new view of the job. Raises TimeoutError after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job: Job | None = None
        try:
            for job in self.watch(job_id, timeout=timeout):
                if on_update is not None:
                    on_update(job)
            if job is not None:
                return job
        except JobDeleted:
            raise
        except StrataError as exc:
            # no usable watch route (get_job below says whether the job itself is missing)
            if exc.status not in (404, 405, 406, 501):
                raise
        while True:
            job = self.get_job(job_id)
            if on_update is not None:
                on_update(job)
            if job.status in STOPPED_STATUSES:
                return job
            _check(deadline, job_id, job)
            time.sleep(poll_interval)

    # -- landing ----------------------------------------------------------------------------

    def put_landing(self, path: str, file: Path) -> LandingFile:
        """Upload one local file to `landing/<path>`, streamed from disk, replacing any old one."""
        with file.open("rb") as body:
            response = self.request("PUT", f"/v1/landing/{quote(path.lstrip('/'), safe='/')}",
                                    content=body,
                                    headers={"Content-Type": "application/octet-stream"})
        return LandingFile.model_validate(response.json())

    def list_landing(self, prefix: str | None = None) -> list[LandingFile]:
        params = {"prefix": prefix} if prefix else None
        body = self.request("GET", "/v1/landing", params=params).json()
        return _LandingList.model_validate(body).files

    # -- webhooks ---------------------------------------------------------------------------

    def create_webhook(self, url: str, events: list[str],
                       pipeline: str | None = None) -> WebhookCreated:
        """Send these events of the caller's jobs to `url`; the answer holds the secret, once."""
        body = {"url": url, "events": events, "pipeline": pipeline}
        return WebhookCreated.model_validate(self.request("POST", "/v1/webhooks", json=body).json())

    def list_webhooks(self, limit: int = 100, offset: int = 0) -> WebhookList:
        params = {"limit": limit, "offset": offset}
        return WebhookList.model_validate(self.request("GET", "/v1/webhooks",
                                                       params=params).json())

    def delete_webhook(self, webhook_id: str) -> None:
        self.request("DELETE", _webhook(webhook_id))

    def deliveries(self, webhook_id: str, limit: int = 50, offset: int = 0) -> DeliveryList:
        """The webhook's deliveries, newest first."""
        params = {"limit": limit, "offset": offset}
        return DeliveryList.model_validate(self.request(
            "GET", f"{_webhook(webhook_id)}/deliveries", params=params).json())


def _webhook(webhook_id: str) -> str:
    return f"/v1/webhooks/{quote(webhook_id, safe='')}"


def _pipeline(name: str) -> str:
    return f"/v1/pipelines/{quote(name, safe='')}"


def _job(job_id: str) -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}"


def _check(deadline: float | None, job_id: str, job: Job | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        state = f"still {job.status}" if job is not None else "not stopped"
        raise TimeoutError(f"job {job_id} {state} when the wait timed out")


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) per Server-Sent Event, and (":", comment) per comment line (`: ping`)."""
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            yield ":", line[1:].strip()
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)
