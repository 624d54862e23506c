"""A pipeline's table on its dashboard page, in headless Chromium: the current rows a page at a
time, every version with the run that committed it, and time travel to an older version.

The whole service runs in the test's event loop (real HTTP, SQLite, the embedded executor,
DuckDB, Delta Lake on real files); see test_dashboard.py for the browser setup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_incremental_api import csv as readings
from tests.jobs_over_http import wait_status
from tests.service import running_service, service_settings
from tests.ui.test_dashboard import (
    CHROMIUM,
    CHROMIUM_ARGS,
    QUICK,
    async_playwright,
    expect,
    open_page,
    pytestmark,
    shot,
)

__all__ = ["pytestmark"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"

PIPELINE = {"description": "readings, night after night", "params": {
    "source": {"path": "readings/*.csv", "options": {"header": True}, "mode": "new_files"},
    "layers": {"ds": {"sql": "SELECT day, device, value FROM dws ORDER BY device",
                      "table": {"mode": "merge", "keys": ["day", "device"]}}}}}


async def run_night(api: httpx.AsyncClient, day: str, devices: int) -> str:
    await api.put(f"/v1/landing/readings/{day}.csv", content=readings(day, devices))
    created = await api.post("/v1/pipelines/readings/runs")
    assert created.status_code == 201, created.text
    job = await wait_status(api, created.json()["job_id"])
    assert job["status"] == "Succeeded", job["conditions"]
    return str(job["job_id"])


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


async def test_a_pipeline_table_shows_its_rows_its_versions_and_an_older_version(
    tmp_path: Path, sqlite_databases: Any, artifacts: Path,
) -> None:
    settings = service_settings(sqlite_databases.new(tmp_path), tmp_path)
    async with running_service(settings) as api, async_playwright() as pw:
        assert (await api.put("/v1/pipelines/readings", json=PIPELINE)).status_code == 201
        first = await run_night(api, "2026-01-01", 3)
        second = await run_night(api, "2026-01-02", 25)
        base = str(api.base_url).rstrip("/")
        profile = tmp_path / "chromium-profile"
        browser = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            locale="en-US", timezone_id="UTC", viewport={"width": 1360, "height": 900})
        try:
            async with open_page(browser, base) as (page, watch):
                await page.goto(f"{base}/ui/pipelines/readings")
                card = page.locator("#table-ds")
                await expect(card.get_by_role("heading", name="Table: DS")).to_be_visible(
                    timeout=QUICK)
                await expect(card).to_contain_text("merge by day, device")

                # the history: two versions, newest first, each with its run and rows added
                versions = page.locator("#table-versions-ds tbody tr")
                await expect(versions).to_have_count(2, timeout=QUICK)
                newest, oldest = versions.nth(0), versions.nth(1)
                await expect(newest).to_have_attribute("data-version", "1")
                await expect(newest.locator("td").nth(1)).to_have_text("MERGE")
                await expect(newest.get_by_role("link", name=second[:8])).to_have_attribute(
                    "href", f"/ui/jobs/{second}")
                await expect(newest.locator("td").nth(3)).to_have_text("25")
                await expect(oldest).to_have_attribute("data-version", "0")
                await expect(oldest.locator("td").nth(1)).to_have_text("APPEND")
                await expect(oldest.get_by_role("link", name=first[:8])).to_be_visible()
                await expect(oldest.locator("td").nth(3)).to_have_text("3")

                # the latest rows, 20 a page: 28 in all
                rows = page.locator("#table-rows-ds tbody tr")
                rng = page.locator("#table-range-ds")
                await expect(rng).to_have_text("DS at v1 (latest): rows 1 to 20")
                await expect(rows).to_have_count(20)
                await expect(page.locator("#table-rows-ds thead th")).to_have_text(
                    ["day", "device", "value"])
                await card.get_by_role("button", name="Next →").click()
                await expect(rng).to_have_text("DS at v1 (latest): rows 21 to 28")
                await expect(rows).to_have_count(8)
                await expect(card.get_by_role("button", name="Next →")).to_be_disabled()
                await shot(page, artifacts, "20-pipeline-table-latest")

                # time travel: the first night's version holds fewer rows, only that night's
                await page.locator("#table-version-ds").select_option("0")
                await expect(rng).to_have_text("DS at v0: rows 1 to 3")
                await expect(rows).to_have_count(3)
                await expect(rows.locator("td:first-child")).to_have_text(["2026-01-01"] * 3)
                await shot(page, artifacts, "21-pipeline-table-version-0")

                # and back to v1 from its history row
                await newest.get_by_role("button", name="Show the rows of v1").click()
                await expect(rng).to_have_text("DS at v1: rows 1 to 20")
                await expect(page.locator("#table-version-ds")).to_have_value("1")
                watch.check()
        finally:
            await browser.close()
