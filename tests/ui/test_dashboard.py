"""The dashboard at /ui, checked in a real browser: Debian's Chromium driven by Playwright.

A whole service runs in this test's event loop (real HTTP on a free port, SQLite, the embedded
executor, DuckDB on real files); Playwright's async API drives headless Chromium in the same loop.
Screenshots go to `test-artifacts/ui/` for a person to look at.

Needs /usr/bin/chromium (`.ci/e2e-setup.sh`) and the `playwright` package; skipped without them.
Never downloads a browser: Chromium is started from /usr/bin/chromium.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jobs_over_http import submit, upload, wait_status
from tests.orders_data import Dirt, generate, write_csv
from tests.servers import free_port
from tests.service import running_service, service_settings
from tests.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (run .ci/e2e-setup.sh)",
                allow_module_level=True)
async_api = pytest.importorskip(
    "playwright.async_api",
    reason="browser tests need the playwright package (pip install -e '.[dev]')")
Browser = async_api.Browser
Page = async_api.Page
async_playwright = async_api.async_playwright
expect = async_api.expect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
STAGES = ["LandingToODS", "ODSToDWD", "DWDToDWS", "DWSToDS"]
SLOW = 60_000  # ms: a whole job through four stages
QUICK = 15_000  # ms: one UI reaction


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_databases: Any) -> str:
    url: str = sqlite_databases.new(tmp_path)
    return url


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    async with async_playwright() as pw:
        # a persistent context is the only way to give Chromium an explicit, empty profile dir
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            locale="en-US", timezone_id="UTC", viewport={"width": 1360, "height": 900},
            color_scheme="light",
        )
        try:
            yield context
        finally:
            await context.close()


class PageWatch:
    """What a page asked for and complained about, so a test can insist on neither."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.base_url = base_url
        self.foreign: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _request(self, request: Any) -> None:
        url = str(request.url)
        if not (url.startswith(self.base_url + "/") or url.startswith(("blob:", "data:"))):
            self.foreign.append(url)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def check(self, allow: Callable[[str], bool] = lambda _: False) -> None:
        assert self.foreign == [], f"the page reached outside the service: {self.foreign}"
        errors = [e for e in self.errors if not allow(e)]
        assert errors == [], errors


@asynccontextmanager
async def open_page(browser: Any, base_url: str) -> AsyncIterator[tuple[Any, PageWatch]]:
    """A new tab, closed (with its live streams) before the service it talks to stops."""
    page = await browser.new_page()
    try:
        yield page, PageWatch(page, base_url)
    finally:
        await page.close()


async def shot(page: Any, artifacts: Path, name: str, full_page: bool = True) -> None:
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=full_page,
                          animations="disabled")


async def land_orders(api: httpx.AsyncClient, tmp_path: Path) -> None:
    files = write_csv(generate(20000, seed=11, dirt=Dirt().scaled(5)), tmp_path / "src", files=4)
    await upload(api, files)


async def record_statuses(page: Any) -> None:
    """Record every status the job page's badge shows, in the page, as it changes."""
    await page.evaluate("""() => {
        window.__statuses = [];
        const target = document.querySelector('.job-badges');
        const note = () => {
            const s = target.dataset.status;
            const seen = window.__statuses;
            if (s && seen[seen.length - 1] !== s) seen.push(s);
            document.body.dataset.seenStatuses = seen.join(" ");
        };
        note();
        new MutationObserver(note).observe(target, {attributes: true, childList: true});
    }""")


def row_of(page: Any, job_id: str) -> Any:
    return page.locator(f'#jobs-table tbody tr[data-job-id="{job_id}"]')


async def test_dashboard_follows_a_job_to_its_output_and_cancels_another(
    sqlite_url: str, tmp_path: Path, browser: Any, artifacts: Path,
    orders_job: dict[str, Any],
) -> None:
    settings = service_settings(sqlite_url, tmp_path)
    async with running_service(settings) as api:
        base = str(api.base_url).rstrip("/")
        await land_orders(api, tmp_path)
        # created suspended, so the page can watch it from the very start
        main_id = await submit(api, {**orders_job, "suspend": True})
        other_id = await submit(api, {**orders_job, "name": "orders-on-hold", "suspend": True})

        async with open_page(browser, base) as (page, watch):
            await follow_and_cancel(page, watch, api, base, artifacts, main_id, other_id,
                                    orders_job)


async def follow_and_cancel(page: Any, watch: PageWatch, api: httpx.AsyncClient, base: str,
                            artifacts: Path, main_id: str, other_id: str,
                            orders_job: dict[str, Any]) -> None:
    # -- the list
    await page.goto(f"{base}/ui")
    await expect(page.get_by_role("heading", name="Jobs", level=1)).to_be_visible()
    main_row = row_of(page, main_id)
    await expect(main_row).to_have_count(1, timeout=QUICK)
    await expect(row_of(page, other_id)).to_have_count(1)
    await expect(main_row.get_by_role("link", name="orders-daily")).to_be_visible()
    await expect(main_row.locator(".badge[data-status]")).to_have_text("Pending")
    await expect(main_row.get_by_text("Suspended")).to_be_visible()
    await expect(main_row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "0")
    await expect(page.locator("#list-meta")).to_contain_text("2 jobs")
    await shot(page, artifacts, "01-list-two-suspended-jobs")

    # the list polls: a job made behind its back shows up without a reload
    extra_id = await submit(api, {**orders_job, "name": "orders-extra", "suspend": True})
    await expect(row_of(page, extra_id)).to_have_count(1, timeout=QUICK)
    await expect(page.locator("#jobs-table tbody tr").first).to_have_attribute(
        "data-job-id", extra_id)

    # -- one job: open it from the list
    await main_row.get_by_role("link", name="orders-daily").click()
    await expect(page).to_have_url(f"{base}/ui/jobs/{main_id}")
    await expect(page.get_by_role("heading", name="orders-daily", level=1)).to_be_visible()
    badge = page.locator(".job-badges")
    await expect(badge).to_have_attribute("data-status", "Pending")
    await expect(page.locator(".live")).to_have_attribute("data-state", "live", timeout=QUICK)
    await expect(page.locator("svg.fsm")).to_have_attribute("data-current", "Pending")
    await expect(page.locator('svg.fsm g[data-state="Pending"]')).to_have_class(
        re.compile(r"\bst-current\b"))
    await expect(page.locator("svg.fsm g[data-state]")).to_have_count(9)
    toolbar = page.get_by_role("toolbar", name="Job actions")
    await expect(toolbar.get_by_role("button", name="Resume")).to_be_enabled()
    await expect(toolbar.get_by_role("button", name="Suspend")).to_be_disabled()
    await expect(toolbar.get_by_role("button", name="Retry")).to_be_disabled()
    await expect(page.get_by_text("No conditions yet.")).to_be_visible()
    await expect(page.locator("#events li .event-name")).to_have_text(["create"])
    await shot(page, artifacts, "02-job-suspended")

    # an error answer is shown with the problem's detail (a 409 from a stale page, faked)
    async def conflict(route: Any) -> None:
        await route.fulfill(status=409, content_type="application/problem+json", json={
            "type": "about:blank", "title": "Conflict", "status": 409,
            "detail": "cannot resume a job in state Cancelled"})

    await page.route(f"**/v1/jobs/{main_id}/resume", conflict)
    await toolbar.get_by_role("button", name="Resume").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Could not resume the job")
    await expect(alert).to_contain_text("409 Conflict")
    await expect(alert).to_contain_text("cannot resume a job in state Cancelled")
    await shot(page, artifacts, "03-action-error-problem-detail", full_page=False)
    await page.unroute(f"**/v1/jobs/{main_id}/resume")
    await alert.get_by_role("button", name="Dismiss this message").click()
    await expect(alert).to_have_count(0)

    # -- resume for real, and follow it live to Succeeded (no reload: SSE)
    await record_statuses(page)
    await toolbar.get_by_role("button", name="Resume").click()
    # a picture of it running (whatever stage it is in by the time the shutter clicks)
    # (expect, not wait_for_function: the page's CSP forbids the eval that polling would need)
    await expect(page.locator("body")).to_have_attribute(
        "data-seen-statuses", re.compile(r"^Pending \w+"), timeout=SLOW)
    await shot(page, artifacts, "04-job-running", full_page=False)
    await expect(badge).to_have_attribute("data-status", "Succeeded", timeout=SLOW)
    seen = await page.evaluate("window.__statuses")
    assert seen[0] == "Pending" and seen[-1] == "Succeeded", seen
    assert set(seen) & {*STAGES, "Completed"}, f"no progress was shown on the way: {seen}"
    assert seen == sorted(seen, key=["Pending", *STAGES, "Completed", "Succeeded"].index)
    await expect(page.locator(".live")).to_have_attribute("data-state", "ended")

    job = (await api.get(f"/v1/jobs/{main_id}")).json()
    assert job["status"] == "Succeeded", job["conditions"]
    progress = page.locator(".progress-slot").get_by_role("progressbar")
    await expect(progress).to_have_attribute("aria-valuenow", "100")
    for stage in STAGES:
        await expect(progress.locator(f'.seg[data-stage="{stage}"]')).to_have_class(
            re.compile(r"\bseg-done\b"))
    await expect(page.locator("svg.fsm")).to_have_attribute("data-current", "Succeeded")

    # per-layer results, exactly as the API reports them
    for layer, result in job["results"]["layers"].items():
        row = page.locator(f'#layers-table tr[data-layer="{layer}"]')
        for field in ("rows", "rejects", "deduped"):
            await expect(row.locator(f'[data-field="{field}"]')).to_have_text(
                f"{result[field]:,}")
        await expect(row.locator('[data-field="seconds"]')).to_have_text(
            re.compile(r"^\d+(\.\d+)? s$"))
    dwd = job["results"]["layers"]["dwd"]
    assert dwd["rejects"] > 0 and dwd["deduped"] > 0  # the dirty data shows in the table

    # the DS preview: the first 50 rows of the served output
    ds_rows = job["results"]["layers"]["ds"]["rows"]
    output = (await api.get(f"/v1/jobs/{main_id}/output", params={"limit": 50})).json()
    preview = page.locator("#output-table")
    await expect(preview.locator("tbody tr")).to_have_count(min(50, ds_rows), timeout=QUICK)
    await expect(page.locator("#output-caption")).to_have_text(
        f"First {min(50, ds_rows)} of {ds_rows:,} rows")
    await expect(preview.locator("thead th")).to_have_text(list(output[0].keys()))
    await expect(preview.locator("tbody tr").first.locator("td").nth(0)).to_have_text(
        str(output[0]["event_date"]))
    await expect(preview.locator("tbody tr").first.locator("td").nth(1)).to_have_text(
        str(output[0]["region"]))

    # the events timeline: every transition, in order
    events = (await api.get(f"/v1/jobs/{main_id}/events")).json()["events"]
    await expect(page.locator("#events li")).to_have_count(len(events), timeout=QUICK)
    await expect(page.locator("#events li .event-name")).to_have_text(
        [e["event"] for e in events])
    await expect(page.locator("#conditions-table tr[data-type='Succeeded']")).to_contain_text(
        "True")
    for name in ("Cancel", "Suspend", "Resume"):
        await expect(toolbar.get_by_role("button", name=name)).to_be_disabled()
    await expect(toolbar.get_by_role("button", name="Retry")).to_be_disabled()
    await shot(page, artifacts, "05-job-succeeded")
    await page.locator("#output").scroll_into_view_if_needed()
    await shot(page, artifacts, "06-ds-output-preview", full_page=False)

    # -- back to the list: the finished job's bar is full, the others wait
    await page.get_by_role("link", name="← All jobs").click()
    await expect(page).to_have_url(f"{base}/ui")
    main_row = row_of(page, main_id)
    await expect(main_row.locator(".badge[data-status]")).to_have_text("Succeeded",
                                                                       timeout=QUICK)
    await expect(main_row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    await shot(page, artifacts, "07-list-after-success")

    # -- the second job: cancel it from its page
    await row_of(page, other_id).get_by_role("link", name="orders-on-hold").click()
    await expect(page.get_by_role("heading", name="orders-on-hold", level=1)).to_be_visible()
    await expect(page.locator(".job-badges")).to_have_attribute("data-status", "Pending")
    await page.get_by_role("toolbar", name="Job actions").get_by_role(
        "button", name="Cancel").click()
    await expect(page.locator(".job-badges")).to_have_attribute(
        "data-status", "Cancelled", timeout=QUICK)
    await expect(page.get_by_role("status").filter(has_text="Cancelled")).to_be_visible()
    await expect(page.locator("svg.fsm")).to_have_attribute("data-current", "Cancelled",
                                                             timeout=QUICK)
    await expect(page.get_by_role("toolbar", name="Job actions").get_by_role(
        "button", name="Retry")).to_be_enabled()
    await expect(page.locator("#events li .event-name").last).to_have_text("cancel",
                                                                          timeout=QUICK)
    assert (await api.get(f"/v1/jobs/{other_id}")).json()["status"] == "Cancelled"
    await shot(page, artifacts, "08-second-job-cancelled")

    # -- a phone-sized screen, and the dark theme
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.emulate_media(color_scheme="dark")
    await page.goto(f"{base}/ui/jobs/{main_id}")
    await expect(page.locator(".job-badges")).to_have_attribute("data-status", "Succeeded")
    await expect(page.locator("#output-table tbody tr").first).to_be_visible(timeout=QUICK)
    await shot(page, artifacts, "09-job-phone-dark")
    diagram = page.locator("#fsm svg.fsm")
    await expect(diagram).to_have_class(re.compile(r"\bfsm-vertical\b"))  # fits a phone
    await diagram.screenshot(path=str(artifacts / "10-state-diagram-phone-dark.png"),
                             animations="disabled")
    await page.goto(f"{base}/ui")
    await expect(row_of(page, main_id)).to_have_count(1, timeout=QUICK)
    await shot(page, artifacts, "11-list-phone-dark")

    watch.check(allow=lambda e: "status of 409 (Conflict)" in e)  # the faked answer above


async def test_dashboard_asks_for_a_token_when_the_api_wants_one(
    sqlite_url: str, tmp_path: Path, browser: Any, artifacts: Path,
    orders_job: dict[str, Any],
) -> None:
    token = "alice-secret-token"
    settings = service_settings(sqlite_url, tmp_path, api_tokens=f"alice={token}")
    async with running_service(settings) as api:
        api.headers["Authorization"] = f"Bearer {token}"
        base = str(api.base_url).rstrip("/")
        await land_orders(api, tmp_path)
        job_id = await submit(api, {**orders_job, "suspend": True})

        async with open_page(browser, base) as (page, watch):
            await sign_in_and_follow(page, watch, base, artifacts, job_id, token)


async def sign_in_and_follow(page: Any, watch: PageWatch, base: str, artifacts: Path,
                             job_id: str, token: str) -> None:
    await page.goto(f"{base}/ui")
    field = page.get_by_label("API token")
    await expect(field).to_be_visible(timeout=QUICK)
    await expect(page.locator("#auth-reason")).to_contain_text("a bearer token is required")
    await field.fill("not-the-token")
    await page.get_by_role("button", name="Use token").click()
    await expect(page.locator("#auth-reason")).to_contain_text("The token was refused")
    await shot(page, artifacts, "12-token-refused", full_page=False)

    await field.fill(token)
    await page.get_by_role("button", name="Use token").click()
    await expect(field).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('strata.token')") == token
    await expect(row_of(page, job_id)).to_have_count(1, timeout=QUICK)
    await row_of(page, job_id).get_by_role("link", name="orders-daily").click()

    # with a token the watch stream is read with fetch (EventSource cannot send headers)
    await expect(page.locator(".live")).to_have_attribute("data-state", "live", timeout=QUICK)
    await page.get_by_role("toolbar", name="Job actions").get_by_role(
        "button", name="Resume").click()
    await expect(page.locator(".job-badges")).to_have_attribute(
        "data-status", "Succeeded", timeout=SLOW)
    await expect(page.locator("#output-table tbody tr").first).to_be_visible(timeout=QUICK)
    await shot(page, artifacts, "13-signed-in-job", full_page=False)

    # forgetting the token asks for it again
    await page.get_by_role("button", name="Forget token").click()
    await expect(field).to_be_visible(timeout=QUICK)

    watch.check(allow=lambda e: "401" in e)


async def test_the_action_buttons_are_the_ones_the_api_allows(
    sqlite_url: str, tmp_path: Path, browser: Any, orders_job: dict[str, Any],
) -> None:
    """The page does not work out which actions are legal: it enables what `allowed_actions`
    says, even when that disagrees with what the status alone would suggest."""
    settings = service_settings(sqlite_url, tmp_path)
    async with running_service(settings) as api:
        base = str(api.base_url).rstrip("/")
        job_id = await submit(api, {**orders_job, "suspend": True})
        real = (await api.get(f"/v1/jobs/{job_id}")).json()
        assert (real["status"], real["allowed_actions"]) == ("Pending", ["cancel", "resume"])

        async with open_page(browser, base) as (page, watch):
            async def only_retry(route: Any) -> None:
                await route.fulfill(status=200, content_type="application/json",
                                    json={**real, "allowed_actions": ["retry"]})

            async def no_stream(route: Any) -> None:
                await route.abort()

            await page.route(f"**/v1/jobs/{job_id}", only_retry)
            await page.route(f"**/v1/jobs/{job_id}/watch", no_stream)
            await page.goto(f"{base}/ui/jobs/{job_id}")
            toolbar = page.get_by_role("toolbar", name="Job actions")
            await expect(toolbar.get_by_role("button", name="Retry")).to_be_enabled(
                timeout=QUICK)
            for name in ("Cancel", "Suspend", "Resume"):
                await expect(toolbar.get_by_role("button", name=name)).to_be_disabled()
            # the diagram is drawn from the machine as data: every state, the current one marked
            await expect(page.locator("svg.fsm g[data-state]")).to_have_count(9)
            await expect(page.locator('svg.fsm g[data-state="Pending"]')).to_have_class(
                re.compile(r"\bst-current\b"))
            watch.check(allow=lambda e: "net::ERR_FAILED" in e)


async def test_pipelines_page_shows_runs_and_links_to_their_jobs_and_back(
    sqlite_url: str, tmp_path: Path, browser: Any, artifacts: Path,
    orders_job: dict[str, Any],
) -> None:
    settings = service_settings(sqlite_url, tmp_path)
    async with running_service(settings) as api:
        base = str(api.base_url).rstrip("/")
        await land_orders(api, tmp_path)
        body = {"description": "orders, nightly", "params": orders_job["params"],
                "schedule": {"cron": "30 1 * * *", "timezone": "Europe/Berlin"}}
        applied = await api.put("/v1/pipelines/orders-nightly", json=body)
        assert applied.status_code == 201, applied.text
        run = await api.post("/v1/pipelines/orders-nightly/runs", json={"parameters": {}})
        assert run.status_code == 201, run.text
        job_id = run.json()["job_id"]
        job = await wait_status(api, job_id)
        assert job["status"] == "Succeeded", job["conditions"]

        async with open_page(browser, base) as (page, watch):
            await follow_a_pipeline_run(page, api, base, artifacts, job_id)
            watch.check()


async def follow_a_pipeline_run(page: Any, api: httpx.AsyncClient, base: str, artifacts: Path,
                                job_id: str) -> None:
    await page.goto(f"{base}/ui")
    await page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Pipelines").click()
    await expect(page).to_have_url(f"{base}/ui/pipelines")
    await expect(page.get_by_role("heading", name="Pipelines", level=1)).to_be_visible()
    row = page.locator('#pipelines-table tr[data-pipeline="orders-nightly"]')
    await expect(row).to_have_count(1, timeout=QUICK)
    await expect(row.locator(".cell-schedule")).to_have_text("cron 30 1 * * * (Europe/Berlin)")
    await expect(row.locator(".cell-next time")).to_have_count(1)
    mark = row.locator(f'.run-mark[data-job-id="{job_id}"]')
    await expect(mark).to_have_attribute("data-status", "Succeeded")
    await expect(mark).to_have_class(re.compile(r"\bmark-ok\b"))
    await shot(page, artifacts, "14-pipelines-list")

    # the pipeline's own page: its versions and runs
    await row.get_by_role("link", name="orders-nightly").click()
    await expect(page).to_have_url(f"{base}/ui/pipelines/orders-nightly")
    await expect(page.get_by_role("heading", name="orders-nightly", level=1)).to_be_visible()
    await expect(page.locator("#versions-table tbody tr")).to_have_count(1, timeout=QUICK)
    await expect(page.locator("#runs-table tbody tr")).to_have_count(1)
    await expect(page.locator(f'#runs-table tr[data-job-id="{job_id}"]')).to_contain_text(
        "manual")
    await shot(page, artifacts, "15-pipeline-detail")

    # to the run's job, and back through its pipeline link
    await page.locator(f'#runs-table tr[data-job-id="{job_id}"] a').click()
    await expect(page).to_have_url(f"{base}/ui/jobs/{job_id}")
    await expect(page.locator(".job-badges")).to_have_attribute("data-status", "Succeeded")
    await expect(page.locator(".pipeline-ref")).to_contain_text("v1 · manual")
    await browse_layers_and_rejects(page, api, artifacts, job_id)
    await try_it(page, artifacts, job_id)
    await page.locator("#pipeline-link").click()
    await expect(page).to_have_url(f"{base}/ui/pipelines/orders-nightly")
    await expect(page.get_by_role("heading", name="orders-nightly", level=1)).to_be_visible()


async def browse_layers_and_rejects(page: Any, api: httpx.AsyncClient, artifacts: Path,
                                    job_id: str) -> None:
    """The dwd checks of the dirty orders reject rows: counted by reason, paged 20 at a time."""
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    dwd = job["results"]["layers"]["dwd"]
    rejected = (await api.get(f"/v1/jobs/{job_id}/layers/dwd/rejects",
                              params={"limit": 10000})).json()
    assert dwd["rejects"] == len(rejected) > 20
    counts: dict[str, int] = {}
    for row in rejected:
        counts[row["_reject_reason"]] = counts.get(row["_reject_reason"], 0) + 1

    data = page.get_by_role("toolbar", name="Layer data")
    await data.get_by_role("button", name="DWD rejects").click()
    await expect(page.locator("#layer-view-title")).to_have_text(
        f"DWD rejects: {dwd['rejects']:,} rows", timeout=QUICK)
    for reason, n in counts.items():
        await expect(page.locator(f'#reject-reasons tr[data-reason="{reason}"] td')).to_have_text(
            f"{n:,}")
    table = page.locator("#rejects-table")
    await expect(table.locator("tbody tr")).to_have_count(20)
    await expect(page.locator("#layer-view")).not_to_contain_text("null")
    await expect(table.locator("thead th").last).to_have_text("_reject_reason")
    await expect(page.locator("#rejects-range")).to_have_text(
        f"Rows 1 to 20 of {dwd['rejects']:,}")
    await shot(page, artifacts, "16-dwd-rejects")
    await page.get_by_role("button", name="Next →").click()
    await expect(page.locator("#rejects-range")).to_have_text(
        f"Rows 21 to {min(40, dwd['rejects'])} of {dwd['rejects']:,}", timeout=QUICK)
    await expect(table.locator("tbody tr").first.locator("td").first).to_have_text(
        str(rejected[20][next(iter(rejected[20]))]))
    await page.get_by_role("button", name="← Previous").click()
    await expect(page.locator("#rejects-range")).to_have_text(
        f"Rows 1 to 20 of {dwd['rejects']:,}", timeout=QUICK)

    # a layer's first rows
    await data.get_by_role("button", name="DWS rows").click()
    dws = (await api.get(f"/v1/jobs/{job_id}/layers/dws", params={"limit": 20})).json()
    await expect(page.locator("#layer-view-title")).to_have_text(
        f"DWS: first {len(dws)} of {job['results']['layers']['dws']['rows']:,} rows",
        timeout=QUICK)
    await expect(page.locator("#layer-rows-table thead th")).to_have_text(list(dws[0].keys()))
    await expect(page.locator("#layer-rows-table tbody tr")).to_have_count(len(dws))


async def try_it(page: Any, artifacts: Path, job_id: str) -> None:
    """"Try it" sends the job's name and params as a dry run: every layer, nothing created."""
    jobs_before = await page.evaluate("fetch('/v1/jobs').then((r) => r.json())")
    await page.get_by_role("toolbar", name="Job actions").get_by_role(
        "button", name="Try it").click()
    dry = page.locator("#dry-run")
    await expect(page.locator("#dry-run-caption")).to_contain_text(
        "nothing was created", timeout=SLOW)
    await expect(dry.locator(".dry-layer")).to_have_count(4)
    dwd = dry.locator('.dry-layer[data-layer="dwd"]')
    await expect(dwd.locator(".dry-counts")).to_have_text(
        re.compile(r"^ [\d,]+ rows · [1-9][\d,]* rejects · [\d,]+ deduped$"))
    await expect(dwd.locator(".dry-columns")).to_contain_text("amount_usd DOUBLE")
    await expect(dry.locator("#dry-ds-table thead th").first).to_have_text("event_date")
    await expect(dry.locator("#dry-ods-table tbody tr")).to_have_count(20)
    await shot(page, artifacts, "17-try-it")
    jobs_after = await page.evaluate("fetch('/v1/jobs').then((r) => r.json())")
    assert jobs_after["total"] == jobs_before["total"]


async def test_webhooks_page_lists_a_webhook_and_its_failing_deliveries(
    sqlite_url: str, tmp_path: Path, browser: Any, artifacts: Path,
    orders_job: dict[str, Any],
) -> None:
    """A webhook to a loopback port nobody listens on: its delivery is tried again and again,
    and the page shows the attempts and the error."""
    settings = service_settings(sqlite_url, tmp_path, webhook_allow_private=True,
                                webhook_poll_seconds=0.05, webhook_backoff_seconds=0.2)
    async with running_service(settings) as api:
        base = str(api.base_url).rstrip("/")
        url = f"http://127.0.0.1:{free_port()}/hook"
        created = await api.post("/v1/webhooks", json={"url": url, "events": ["job.cancelled"]})
        assert created.status_code == 201, created.text
        hook_id = created.json()["webhook_id"]
        job_id = await submit(api, {**orders_job, "suspend": True})
        assert (await api.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200

        async def tried_twice() -> dict[str, Any] | None:
            sent = (await api.get(f"/v1/webhooks/{hook_id}/deliveries")).json()["deliveries"]
            return sent[0] if sent and sent[0]["attempts"] >= 2 else None

        await wait_for(tried_twice, timeout=30, message="two attempts at the delivery")

        async with open_page(browser, base) as (page, watch):
            await page.goto(f"{base}/ui")
            await page.get_by_role("navigation", name="Main").get_by_role(
                "link", name="Webhooks").click()
            await expect(page).to_have_url(f"{base}/ui/webhooks")
            row = page.locator(f'#webhooks-table tr[data-webhook-id="{hook_id}"]')
            await expect(row).to_contain_text(url, timeout=QUICK)
            await expect(row).to_contain_text("job.cancelled")
            await row.get_by_role("button", name="Deliveries").click()
            await expect(page).to_have_url(f"{base}/ui/webhooks?webhook={hook_id}")
            delivery = page.locator("#deliveries-table tbody tr")
            await expect(delivery).to_have_count(1, timeout=QUICK)
            await expect(delivery).to_contain_text("job.cancelled")
            await expect(delivery.locator(f'a[href="/ui/jobs/{job_id}"]')).to_have_count(1)
            await expect(delivery.locator("[data-status]")).to_have_text(
                re.compile(r"^(pending|failed)$"))
            await expect(delivery.locator('[data-field="attempts"]')).to_have_text(
                re.compile(r"^([2-9]|\d\d+)$"))
            await expect(delivery.locator('[data-field="last"]')).not_to_have_text("—")
            await shot(page, artifacts, "18-webhook-deliveries")
            # the attempts keep counting while the page is open (it polls)
            seen = int(await delivery.locator('[data-field="attempts"]').inner_text())
            await expect(delivery.locator('[data-field="attempts"]')).not_to_have_text(
                str(seen), timeout=SLOW)  # the backoff doubles: allow a few rounds
            watch.check()
