"""`strata pipelines …` against a real running service: apply a YAML file, run it for a day,
backfill days, pause the schedule; with the documented exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.cli.commands import strata
from tests.orders_data import EXAMPLES

# the CLI never touches the database: one backend is enough (the API tests run on both)
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PIPELINE = EXAMPLES / "orders_pipeline.yaml"


async def land_days(service: httpx.AsyncClient, orders_files: list[Path], *days: str) -> None:
    for day in days:
        response = await service.put(f"/v1/landing/orders/{day}/{orders_files[0].name}",
                                     content=orders_files[0].read_bytes())
        assert response.status_code == 201, response.text


async def test_apply_is_declarative_and_ls_and_get_show_the_schedule(base_url: str) -> None:
    first = await strata("pipelines", "apply", PIPELINE, "--url", base_url)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("pipeline orders-nightly created (version 1); next run 20")
    again = await strata("pipelines", "apply", PIPELINE, "--url", base_url)
    assert "unchanged (version 1)" in again.stdout
    changed = await strata("pipelines", "apply", "-", "--url", base_url,
                           input=PIPELINE.read_text().replace("succeeded: 7", "succeeded: 8"))
    assert changed.exit_code == 0 and "configured (version 2)" in changed.stdout
    listed = await strata("pipelines", "ls", "--url", base_url)
    assert "orders-nightly" in listed.stdout and "Europe/Berlin" in listed.stdout
    got = await strata("pipelines", "get", "orders-nightly", "--json", "--url", base_url)
    document = json.loads(got.stdout)
    assert document["version"] == 2 and document["schedule"]["cron"] == "30 1 * * *"
    paused = await strata("pipelines", "suspend", "orders-nightly", "--url", base_url)
    assert paused.stdout.strip() == "pipeline orders-nightly suspended"
    resumed = await strata("pipelines", "resume", "orders-nightly", "--url", base_url)
    assert "resumed; next run 20" in resumed.stdout


async def test_run_for_a_day_waits_with_live_progress(
    base_url: str, service: httpx.AsyncClient, orders_files: list[Path]
) -> None:
    await land_days(service, orders_files, "2026-01-05")
    await strata("pipelines", "apply", PIPELINE, "--url", base_url)
    run = await strata("pipelines", "run", "orders-nightly", "--param", "day=2026-01-05",
                       "--wait", "--url", base_url)
    assert run.exit_code == 0, run.output
    assert run.stdout.splitlines()[-1].startswith("Succeeded  orders-nightly")
    assert "LandingToODS" in run.stderr and "ds: " in run.stderr
    jobs = (await service.get("/v1/jobs", params={"pipeline": "orders-nightly"})).json()["jobs"]
    assert jobs[0]["pipeline"]["parameters"]["day"] == {"type": "date", "value": "2026-01-05"}
    assert jobs[0]["params"]["source"]["path"] == "orders/2026-01-05/*.csv"


async def test_backfill_three_days_and_wait(
    base_url: str, service: httpx.AsyncClient, orders_files: list[Path]
) -> None:
    await land_days(service, orders_files, "2026-01-01", "2026-01-02", "2026-01-03")
    await strata("pipelines", "apply", PIPELINE, "--url", base_url)
    done = await strata("pipelines", "backfill", "orders-nightly", "--from", "2026-01-01",
                        "--to", "2026-01-03", "--wait", "--url", base_url)
    assert done.exit_code == 0, done.output
    assert "3 run(s)" in done.stdout and "3 succeeded, 0 failed" in done.stdout
    again = await strata("pipelines", "backfill", "orders-nightly", "--from", "2026-01-01",
                         "--to", "2026-01-03", "--url", base_url)
    assert "0 run(s) for none (all ran)" in again.stdout
    listed = await strata("jobs", "ls", "--pipeline", "orders-nightly", "--json",
                          "--url", base_url)
    jobs = json.loads(listed.stdout)["jobs"]
    assert sorted(j["params"]["source"]["path"] for j in jobs) == [
        f"orders/2026-01-0{d}/*.csv" for d in (1, 2, 3)]


async def test_a_failed_backfill_run_and_bad_input_give_their_exit_codes(
    base_url: str,
) -> None:
    await strata("pipelines", "apply", PIPELINE, "--url", base_url)
    nothing_landed = await strata("pipelines", "backfill", "orders-nightly", "--from",
                                  "2026-02-01", "--to", "2026-02-01", "--wait", "--url", base_url)
    assert nothing_landed.exit_code == 1, nothing_landed.output
    assert "0 succeeded, 1 failed" in nothing_landed.stdout
    bad_param = await strata("pipelines", "run", "orders-nightly", "--param", "day",
                             "--url", base_url)
    assert bad_param.exit_code == 2
    mistyped = await strata("pipelines", "run", "orders-nightly", "--param", "day=someday",
                            "--url", base_url)
    assert mistyped.exit_code == 3 and "parameters.day" in mistyped.stderr
    unknown = await strata("pipelines", "get", "nope", "--url", base_url)
    assert unknown.exit_code == 3 and "not found" in unknown.stderr
