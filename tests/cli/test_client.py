"""StrataClient against a real running service (and, for the fallbacks, a mock transport)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.client import (
    Conflict,
    Job,
    JobDeleted,
    NotFound,
    StrataClient,
    StrataError,
    Unauthorized,
    Unreachable,
    _sse_events,
)
from tests.cli.commands import failing_spec, orders_spec
from tests.servers import free_port
from tests.service import running_service, service_settings

ORDER = ["Pending", "LandingToODS", "ODSToDWD", "DWDToDWS", "DWSToDS", "Completed", "Succeeded"]


def _lifecycle(url: str, files: list[Path]) -> dict[str, Any]:
    """What a script does: land, submit, wait, read; the facts it saw, for the test to check."""
    seen: list[Job] = []
    with StrataClient(url) as strata:
        landed = [strata.put_landing(f"orders/{f.name}", f) for f in files]
        listed = strata.list_landing("orders/")
        job = strata.create_job(orders_spec(), idempotency_key="client-test-1")
        replay = strata.create_job(orders_spec(), idempotency_key="client-test-1")
        try:
            strata.create_job(orders_spec(retries=1), idempotency_key="client-test-1")
        except Conflict as exc:
            conflict: StrataError | None = exc
        else:  # pragma: no cover
            conflict = None
        done = strata.wait(job.job_id, timeout=60, on_update=seen.append)
        return {
            "landed": landed, "listed": listed, "job": job, "replay": replay,
            "conflict": conflict, "done": done, "seen": seen,
            "rows": strata.output_rows(done.job_id, limit=5),
            "csv": strata.output(done.job_id, "csv", limit=3, offset=1).decode(),
            "events": strata.events(done.job_id),
            "by_name": strata.list_jobs(name="orders-daily", status="Succeeded", limit=10),
            "renamed": strata.update_job(done.job_id, description="renamed by a script"),
        }


async def test_a_script_runs_the_sample_job_end_to_end(
    service: httpx.AsyncClient, orders_files: list[Path]
) -> None:
    facts = await asyncio.to_thread(_lifecycle, str(service.base_url), orders_files)

    assert [f.path for f in facts["landed"]] == [f"orders/{f.name}" for f in orders_files]
    assert {f.path for f in facts["listed"]} == {f.path for f in facts["landed"]}
    job, done = facts["job"], facts["done"]
    assert facts["replay"].job_id == job.job_id
    assert facts["conflict"] is not None and facts["conflict"].status == 409
    assert done.status == "Succeeded"
    statuses = [j.status for j in facts["seen"]]
    assert len(statuses) > 1 and statuses[-1] == "Succeeded"
    # every update is a step forward in the lifecycle (a quick stage may be seen only as done)
    positions = [ORDER.index(s) for s in statuses]
    assert positions == sorted(positions)
    assert set(done.results["layers"]) == {"ods", "dwd", "dws", "ds"}
    assert len(facts["rows"]) == 5 and "revenue_usd" in facts["rows"][0]
    parsed = list(csv.reader(io.StringIO(facts["csv"])))
    assert parsed[0][:2] == ["event_date", "region"] and len(parsed) == 4
    assert [e.to_status for e in facts["events"]][-1] == "Succeeded"
    assert [j.job_id for j in facts["by_name"].jobs] == [job.job_id]
    assert facts["renamed"].description == "renamed by a script"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_errors_are_typed_from_the_problem_document(
    service: httpx.AsyncClient, tmp_path: Path
) -> None:
    def run() -> dict[str, BaseException]:
        caught: dict[str, BaseException] = {}
        with StrataClient(str(service.base_url)) as strata:
            for key, call in {
                "missing": lambda: strata.get_job("no-such-job"),
                "invalid": lambda: strata.create_job({"name": "x"}),
                "unpatched": lambda: strata.update_job("no-such-job", name="y"),
            }.items():
                try:
                    call()
                except StrataError as exc:
                    caught[key] = exc
            failed = strata.wait(strata.create_job(failing_spec()).job_id, timeout=30)
            caught["failed_status"] = RuntimeError(failed.status)
            try:
                strata.cancel(failed.job_id)
            except StrataError as exc:
                caught["illegal"] = exc
            try:
                strata.output(failed.job_id)
            except StrataError as exc:
                caught["no_output"] = exc
            strata.delete_job(failed.job_id)
            try:
                strata.get_job(failed.job_id)
            except StrataError as exc:
                caught["deleted"] = exc
        return caught

    caught = await asyncio.to_thread(run)
    missing = caught["missing"]
    assert isinstance(missing, NotFound)
    assert (missing.status, missing.title, missing.detail) == (
        404, "Job not found", "job no-such-job not found")
    invalid = caught["invalid"]
    assert isinstance(invalid, StrataError) and invalid.status == 422
    assert {"field": "body.params", "message": "Field required", "type": "missing"} \
        in invalid.errors
    assert isinstance(caught["unpatched"], NotFound)
    assert str(caught["failed_status"]) == "Failed"
    illegal = caught["illegal"]
    assert isinstance(illegal, Conflict) and "Failed" in (illegal.detail or "")
    assert isinstance(caught["no_output"], Conflict)
    assert isinstance(caught["deleted"], NotFound)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_token_is_sent_as_bearer(database_url: str, tmp_path: Path) -> None:
    settings = service_settings(database_url, tmp_path, api_tokens="alice=alice-token-1")
    async with running_service(settings) as api:
        url = str(api.base_url)

        def run() -> tuple[BaseException | None, int]:
            error = None
            try:
                with StrataClient(url) as anonymous:
                    anonymous.list_jobs()
            except StrataError as exc:
                error = exc
            with StrataClient(url, token="alice-token-1") as alice:
                return error, alice.list_jobs().total

        error, total = await asyncio.to_thread(run)
    assert isinstance(error, Unauthorized) and error.status == 401
    assert total == 0


def test_environment_gives_the_url_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_URL", "http://strata.example:9000/")
    monkeypatch.setenv("STRATA_TOKEN", "from-env")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"files": []})

    with StrataClient(transport=httpx.MockTransport(handler)) as strata:
        assert strata.list_landing() == []
    assert str(sent[0].url) == "http://strata.example:9000/v1/landing"
    assert sent[0].headers["Authorization"] == "Bearer from-env"


def test_an_unreachable_service_raises_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with StrataClient(url, timeout=2) as strata, pytest.raises(Unreachable) as caught:
        strata.get_job("x")
    assert caught.value.url == url and isinstance(caught.value, ConnectionError)


def _job_doc(status: str, stage: str | None = None, percent: float = 0.0) -> dict[str, Any]:
    at = "2026-01-01T00:00:00Z"
    results: dict[str, Any] = {}
    if stage:
        results["batch"] = {"stage": stage, "percent": percent, "processed": 1, "total": 2}
    return {
        "job_id": "j1", "name": "n", "description": None, "owner": "local", "status": status,
        "suspend": False, "allowed_actions": ["cancel", "suspend"],
        "params": {"source": {"path": "orders/*.csv"}}, "results": results,
        "conditions": [], "attempt": 1, "created_at": at, "updated_at": at,
        "started_at": None, "ended_at": None,
    }


def test_wait_polls_when_the_service_has_no_watch_stream() -> None:
    """An older or proxied service without SSE: wait falls back to polling get_job."""
    states = iter([_job_doc("LandingToODS", "LandingToODS", 50.0), _job_doc("ODSToDWD"),
                   _job_doc("Succeeded")])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/watch"):
            return httpx.Response(404, json={"title": "Not Found", "status": 404})
        return httpx.Response(200, json=next(states))

    seen: list[str] = []
    with StrataClient("http://strata.test", transport=httpx.MockTransport(handler)) as strata:
        done = strata.wait("j1", on_update=lambda j: seen.append(j.status), poll_interval=0)
    assert done.status == "Succeeded"
    assert seen == ["LandingToODS", "ODSToDWD", "Succeeded"]


def test_watch_reads_sse_and_reports_a_deleted_job() -> None:
    pending = json.dumps(_job_doc("Pending"))
    stream = (f": ping\n\nevent: job\nid: 1\ndata: {pending}\n\n"
              'event: deleted\ndata: {"job_id": "j1"}\n\n').encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    seen: list[str] = []
    with StrataClient("http://strata.test", transport=httpx.MockTransport(handler)) as strata, \
            pytest.raises(JobDeleted):
        for job in strata.watch("j1"):
            seen.append(job.status)
    assert seen == ["Pending"]


def test_wait_times_out() -> None:
    running = json.dumps(_job_doc("LandingToODS", "LandingToODS", 10.0))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=f"event: job\ndata: {running}\n\n".encode(),
                              headers={"content-type": "text/event-stream"})

    with StrataClient("http://strata.test", transport=httpx.MockTransport(handler)) as strata, \
            pytest.raises(TimeoutError, match="still LandingToODS"):
        strata.wait("j1", timeout=0.3)


def test_sse_parser_joins_data_lines_and_passes_comments() -> None:
    lines = iter(["event: job", "data: {\"a\":", "data: 1}", "", ": ping", "", "data: x"])
    assert list(_sse_events(lines)) == [("job", '{"a":\n1}'), (":", "ping"), ("message", "x")]


def test_put_landing_streams_the_file_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 100_000)
    received: dict[str, Any] = {}

    class Recording(httpx.BaseTransport):
        """Reads the body as a server would: chunk by chunk, as the client produces it."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            assert isinstance(request.stream, httpx.SyncByteStream)
            chunks = list(request.stream)
            received["chunks"] = len(chunks)
            received["largest"] = max(len(c) for c in chunks)
            received["length"] = int(request.headers["Content-Length"])
            received["body"] = b"".join(chunks)
            return httpx.Response(201, json={"path": "x/big.csv", "size": len(received["body"]),
                                             "modified_at": "2026-01-01T00:00:00Z"})

    with StrataClient("http://strata.test", transport=Recording()) as strata:
        landed = strata.put_landing("x/big.csv", path)
    size = path.stat().st_size
    assert received["chunks"] > 1 and received["largest"] < size
    assert received["length"] == size and landed.size == size
    assert received["body"] == path.read_bytes()
