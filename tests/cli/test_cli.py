"""`strata jobs …` / `strata landing …` against a real running service, with the exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import pytest
import yaml

from tests.cli.commands import ORDERS_JOB, failing_spec, strata
from tests.servers import free_port

# the CLI never touches the database: one backend is enough (the client test runs on both)
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

STAGES = ("LandingToODS", "ODSToDWD", "DWDToDWS", "DWSToDS")


def _job_id(stdout: str) -> str:
    """The id from `job <id> submitted …`."""
    first = stdout.splitlines()[0].split()
    assert first[0] == "job" and first[2] == "submitted", stdout
    return first[1]


@sqlite_only
async def test_a_terminal_session_lands_runs_and_reads_a_job(
    base_url: str, orders_files: list[Path], tmp_path: Path
) -> None:
    put = await strata("landing", "put", *orders_files, "--prefix", "orders/", "--url", base_url)
    assert put.exit_code == 0, put.output
    assert all(f"orders/{f.name}" in put.stdout for f in orders_files)

    ls = await strata("landing", "ls", "--url", base_url)
    assert ls.exit_code == 0 and "orders/orders_0001.csv" in ls.stdout

    run = await strata("jobs", "submit", ORDERS_JOB, "--wait", "--url", base_url)
    assert run.exit_code == 0, run.output
    job_id = _job_id(run.stdout)
    # stdout is not a terminal here, so the progress went to stderr, a line per stage
    for stage, layer in zip(STAGES, ("ods", "dwd", "dws", "ds"), strict=True):
        assert f"{stage}" in run.stderr and f"{layer}: " in run.stderr, run.stderr
    assert "2,000 rows" in run.stderr  # ODS keeps every landed row
    assert "rejects" in run.stderr  # the dirty sample has rows failing DWD's checks
    assert run.stdout.splitlines()[-1].startswith("Succeeded  orders-daily")

    listed = await strata("jobs", "ls", "--url", base_url)
    assert listed.exit_code == 0 and job_id in listed.stdout and "Succeeded" in listed.stdout

    got = await strata("jobs", "get", job_id, "--url", base_url)
    assert got.exit_code == 0
    assert all(stage in got.stdout for stage in STAGES) and "orders/*.csv" in got.stdout

    events = await strata("jobs", "events", job_id, "--url", base_url)
    assert events.exit_code == 0
    words = events.stdout.split()
    assert words.index("create") < words.index("start") < words.index("succeed")
    assert words.count("stage_done") == len(STAGES)

    out = await strata("jobs", "output", job_id, "--format", "csv", "--limit", "5",
                       "--url", base_url)
    assert out.exit_code == 0, out.output
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows[0] == ["event_date", "region", "order_count", "revenue_usd",
                       "avg_order_value_usd", "revenue_7d_usd"]
    assert len(rows) == 6

    target = tmp_path / "ds.csv"
    saved = await strata("jobs", "output", job_id, "-f", "csv", "-o", target, "--url", base_url)
    assert saved.exit_code == 0 and saved.stdout == ""
    assert target.read_text().startswith("event_date,region,")

    deleted = await strata("jobs", "delete", job_id, "--url", base_url)
    assert deleted.exit_code == 0
    gone = await strata("jobs", "get", job_id, "--url", base_url)
    assert gone.exit_code == 3


@sqlite_only
async def test_json_prints_the_api_documents_and_nothing_else(
    service: httpx.AsyncClient, base_url: str, landed: list[Path]
) -> None:
    run = await strata("jobs", "submit", ORDERS_JOB, "--wait", "--json", "--url", base_url,
                       "--idempotency-key", "cli-json-1")
    assert run.exit_code == 0, run.output
    assert run.stderr == ""  # no progress with --json
    job = json.loads(run.stdout)
    assert job["status"] == "Succeeded"
    # exactly the document the API serves for this job
    assert job == (await service.get(f"/v1/jobs/{job['job_id']}")).json()

    replay = await strata("jobs", "submit", ORDERS_JOB, "--json", "--url", base_url,
                          "--idempotency-key", "cli-json-1")
    assert json.loads(replay.stdout)["job_id"] == job["job_id"]

    listed = json.loads((await strata("jobs", "ls", "--json", "--url", base_url)).stdout)
    assert listed == (await service.get("/v1/jobs")).json()
    events = json.loads((await strata("jobs", "events", job["job_id"], "--json",
                                      "--url", base_url)).stdout)
    assert events == (await service.get(f"/v1/jobs/{job['job_id']}/events")).json()
    files = json.loads((await strata("landing", "ls", "--json", "--url", base_url)).stdout)
    assert files == (await service.get("/v1/landing")).json()
    rows = json.loads((await strata("jobs", "output", job["job_id"], "--json", "--limit", "3",
                                    "--url", base_url)).stdout)
    assert len(rows) == 3 and set(rows[0]) >= {"event_date", "region", "revenue_usd"}


@sqlite_only
async def test_a_failed_job_from_a_yaml_spec_exits_1(base_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "failing.yaml"
    spec.write_text(yaml.safe_dump(failing_spec()))

    run = await strata("jobs", "submit", spec, "--wait", "--name", "from-yaml", "--url", base_url)

    assert run.exit_code == 1, run.output
    assert "matched no files" in run.stdout  # why, on the final line
    assert "LandingToODS" in run.stderr and "failed" in run.stderr
    job_id = _job_id(run.stdout)
    got = json.loads((await strata("jobs", "get", job_id, "--json", "--url", base_url)).stdout)
    assert (got["name"], got["status"], got["params"]["retries"]) == ("from-yaml", "Failed", 0)

    watched = await strata("jobs", "watch", job_id, "--json", "--url", base_url)
    assert watched.exit_code == 1 and json.loads(watched.stdout)["status"] == "Failed"

    illegal = await strata("jobs", "cancel", job_id, "--url", base_url)
    assert illegal.exit_code == 3
    assert "Action not allowed in this state (409): cannot cancel a job in state Failed" \
        in illegal.stderr


@sqlite_only
async def test_a_spec_from_stdin_and_actions(base_url: str) -> None:
    spec = json.dumps(failing_spec() | {"suspend": True})
    made = await strata("jobs", "submit", "-", "--json", "--url", base_url, input=spec)
    assert made.exit_code == 0, made.output
    job = json.loads(made.stdout)
    assert job["suspend"] is True

    resumed = await strata("jobs", "resume", job["job_id"], "--url", base_url)
    assert resumed.exit_code == 0 and resumed.stdout.startswith(f"job {job['job_id']}: ")
    suspended = await strata("jobs", "suspend", job["job_id"], "--json", "--url", base_url)
    assert suspended.exit_code in (0, 3)  # it may already have failed: 409 is the honest answer


@sqlite_only
async def test_api_errors_exit_3_with_the_problem_on_stderr(base_url: str, tmp_path: Path) -> None:
    missing = await strata("jobs", "get", "no-such-job", "--url", base_url)
    assert missing.exit_code == 3
    assert missing.stdout == ""
    assert "Job not found (404): job no-such-job not found" in missing.stderr

    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"name": "no-params"}))
    refused = await strata("jobs", "submit", invalid, "--url", base_url)
    assert refused.exit_code == 3
    assert "(422)" in refused.stderr and "body.params: Field required" in refused.stderr


@sqlite_only
async def test_usage_errors_exit_2(base_url: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert (await strata("jobs", "submit", broken, "--url", base_url)).exit_code == 2
    assert (await strata("jobs", "submit", tmp_path / "absent.json")).exit_code == 2
    assert (await strata("jobs", "ls", "--limit", "0", "--url", base_url)).exit_code == 2
    assert (await strata("jobs", "ls", "--status", "Sleeping", "--url", base_url)).exit_code == 2
    assert (await strata("jobs", "frobnicate")).exit_code == 2


async def test_an_unreachable_service_exits_4() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = await strata("jobs", "ls", "--url", url)
    assert result.exit_code == 4
    assert f"cannot reach Strata at {url}" in result.stderr and result.stdout == ""
    from_env = await strata("landing", "ls", env={"STRATA_URL": url})
    assert from_env.exit_code == 4
