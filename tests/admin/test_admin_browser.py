"""The owner's page in headless Chromium (Debian's package, driven by Playwright with that system
browser), against the admin app under uvicorn, the suite's real redis-server, real workers and a
migrated database: sign in; the overview's totals, charts (uPlot, served by the admin itself under
its CSP) and lists (busiest and most failing queues of the selected range, dead letters per queue,
paused queues live); the queue list live from the SSE stream, sorted and filtered, with jobs/s and
p95; a queue's charts, config and consumers; jobs with relative times, retry counts and bulk retry
and remove; the DLQ grouped, filtered, bulk-replayed, bulk-deleted, "replay all matching" with its
count first, and its empty state; the workers and schedules views; navigation that never shows
stale data; 420 px; dark mode; the keyboard.

Screenshots of the overview, a queue, the workers view, a job and the DLQ are written to
``TQ_SCREENSHOTS_DIR`` when it is set (``docs/img`` holds the committed ones, shown in
docs/admin.md); other screenshots go to ``TQ_TEST_ARTIFACTS`` (default: the test's tmp dir)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import running, tiny_retry, wait_for
from support.admin import (
    NO_HANDLER_JOB,
    Q,
    admin_settings,
    auth,
    dead_letters,
    insert_metric_aggregates,
    serving,
    sqlite_database,
    token,
)
from tq import jobs, keys, schedules
from tq.handlers import HandlerRegistry
from tq.producer import Producer
from tq.registry import all_queues, get_queue
from tq.stats import StatsLeader
from tq.worker import Worker

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (apt-get install chromium)")
SCREENSHOTS = os.environ.get("TQ_SCREENSHOTS_DIR")
EXPECTED_4XX = "Failed to load resource: the server responded with a status of 4"
EMAIL = {"to": "ops@example.com", "template": "welcome"}


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
    out = Path(os.environ.get("TQ_TEST_ARTIFACTS", tmp_path)) / "admin-browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


async def shot(page: Any, artifacts: Path, name: str, *, docs: bool = False) -> None:
    """A screenshot to the artifacts; with ``docs``, also the one docs/admin.md shows, when asked."""
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
    if docs and SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"admin-{name}.png"), full_page=True)


async def open_page(browser: Any, url: str, config: Any, **context: Any) -> tuple[Any, list[str]]:
    """A signed-in page, and the list its script errors and blocked resources (CSP) land in."""
    ctx = await browser.new_context(**context)
    page = await ctx.new_page()
    problems: list[str] = []
    # an API's 4xx answer is logged by the browser too: expected where the test asks for one
    page.on(
        "console",
        lambda m: (
            problems.append(m.text) if m.type == "error" and not m.text.startswith(EXPECTED_4XX) else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: d.accept())
    await page.goto(url + "/")
    await page.get_by_label("Owner token").fill(token(config, subject="browser"))
    await page.get_by_role("button", name="Sign in").click()
    await playwright_api.expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page, problems


async def aggregates(database_url: str) -> None:
    """A day of 5-minute history for two queues, as the stats leader writes it."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=now.minute % 5)
    rows = []
    for i in range(1, 24 * 12):
        at = start - timedelta(minutes=5 * i)
        wave = (i % 24) + 3
        for queue, scale in ((Q, 1), ("ai:content", 3)):
            rows.append(
                {
                    "queue": queue,
                    "bucket_start": at,
                    "enqueued": wave * scale,
                    "completed": wave * scale,
                    "failed": (i % 7 == 0) * scale,
                    "retried": 0,
                    "dead": (i % 11 == 0) * 1,
                    "avg_duration_ms": 40.0 + wave,
                    "p95_duration_ms": 90.0 + 2 * wave,
                    "max_waiting": wave,
                    "max_dlq": 0,
                }
            )
    await insert_metric_aggregates(database_url, rows)


async def test_console_views_live_updates_bulk_actions_and_screenshots(
    browser: Any, artifacts: Path, redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    s = admin_settings(
        redis_url,
        sqlite_database(tmp_path),
        queues={Q: tiny_retry(attempts=4, initial_s=3600, max_s=3600)},  # a failure waits an hour
    )
    await aggregates(s.settings.database_url)
    await dead_letters(redis_client, s.settings, 5)
    await schedules.add(
        redis_client,
        schedules.ScheduleSpec(
            name="nightly-digest", queue=Q, job=NO_HANDLER_JOB, payload={"limit": 5}, cron="0 2 * * *"
        ),
    )
    handlers = HandlerRegistry()

    @handlers.register(Q, "send-email")
    async def refuse(ctx: Any, payload: Any) -> None:
        raise ConnectionRefusedError("smtp.example.com:587 refused the connection")

    producer = Producer(redis_client, s.settings)
    expect = playwright_api.expect
    with serving(s) as served:
        async with running(redis_client, s.settings, handlers, queue=Q, consumer_id="worker-a"):
            retrying = await producer.enqueue(Q, "send-email", EMAIL)

            async def in_backoff() -> bool:
                return await redis_client.hget(keys.job(Q, retrying), "s") == b"failed"

            await wait_for(in_backoff, what="a job in retry backoff")
            page, problems = await open_page(browser, served.url, s, viewport={"width": 1280, "height": 900})

            # ---- overview: totals, both charts drawn by uPlot (canvas, axes), lists
            overview = page.locator("#view-overview")
            await expect(overview.locator('[data-total="dead letters"] dd')).to_have_text("5")
            await expect(overview.locator('[data-total="retrying"] dd')).to_have_text("1")
            await expect(overview.locator('[data-total="workers"] dd')).to_have_text("1")
            await expect(page.locator("#chart-history .uplot canvas")).to_have_count(1)
            await expect(page.locator("#chart-live .uplot canvas")).to_have_count(1)
            await expect(page.locator("#chart-history .u-axis")).to_have_count(2)
            await expect(page.locator("#busiest tbody tr").first).to_have_attribute(
                "data-queue", "ai:content"
            )
            # the most failing queues of the hour: ai:content failed 3 times, email:send once
            failing = page.locator("#failing tbody tr")
            await expect(failing).to_have_count(2)
            await expect(failing.first).to_have_attribute("data-queue", "ai:content")
            await expect(failing.first.locator("td").nth(1)).to_have_text("3")
            await expect(page.locator(f'#failing tr[data-queue="{Q}"] td').nth(1)).to_have_text("1")
            # dead letters per queue: only the queues that have some, each a link to its DLQ
            dlq_sizes = page.locator("#dlq-sizes tbody tr")
            await expect(dlq_sizes).to_have_count(1)
            await expect(page.locator(f'#dlq-sizes tr[data-queue="{Q}"] td').nth(1)).to_have_text("5")
            await expect(dlq_sizes.get_by_role("link", name=Q)).to_have_attribute(
                "href", "#/queue/email%3Asend/dlq"
            )
            # paused queues, live: a pause (or resume) through the API shows up without a reload
            paused = page.locator("#paused-list")
            await expect(paused).to_have_text("None: every queue is running.")
            async with httpx.AsyncClient(base_url=served.url, headers=auth(token(s)), timeout=10) as http:
                r = await http.post("/api/owner/queues/ai%3Acontent/pause")
                assert r.status_code == 200, r.text
                await expect(paused.get_by_role("link", name="ai:content")).to_have_attribute(
                    "href", "#/queue/ai%3Acontent"
                )
                await expect(paused.locator("li")).to_have_count(1)
                await expect(overview.locator('[data-total="paused"] dd')).to_have_text("1")
                r = await http.post("/api/owner/queues/ai%3Acontent/resume")
                assert r.status_code == 200, r.text
            await expect(paused).to_have_text("None: every queue is running.")
            await expect(overview.locator('[data-total="paused"] dd')).to_have_text("0")
            await expect(page.locator("#history-empty")).to_be_hidden()
            await page.get_by_role("button", name="Week").click()
            await expect(page.locator("#history-caption")).to_contain_text("per hour")
            # the lists follow the selected range: a week of failures (every 7th bucket)
            await expect(failing.first.locator("td").nth(1)).to_have_text("123")
            await expect(page.locator(f'#failing tr[data-queue="{Q}"] td').nth(1)).to_have_text("41")
            await page.get_by_role("button", name="Hour").click()
            await expect(page.locator("#history-caption")).to_contain_text("per 5 minutes")
            await shot(page, artifacts, "overview", docs=True)

            # ---- queues: live from the stream, sortable, filterable
            await page.get_by_role("link", name="Queues", exact=True).click()
            row = page.locator(f'#queue-table tr[data-queue="{Q}"]')
            await expect(row.locator('[data-field="dead"]')).to_have_text("5")
            await expect(row.locator('[data-field="retrying"]')).to_have_text("1")
            await expect(row.locator('[data-field="consumers"]')).to_have_text("1")
            await expect(page.locator("#live")).to_have_class("on")
            await page.get_by_role("button", name="dead", exact=True).click()  # sort by dead, largest first
            await expect(page.locator("#queue-table tbody tr").first).to_have_attribute("data-queue", Q)
            await expect(page.locator('#queue-table th[aria-sort="descending"]')).to_have_text("dead")
            await page.get_by_label("Filter").fill("ai:")
            await expect(row).to_have_count(0)
            await expect(page.locator('#queue-table tr[data-queue="ai:content"]')).to_have_count(1)
            await page.get_by_label("Filter").fill("")

            # ---- a queue: charts, live config, consumers
            await row.get_by_role("link", name=Q).click()
            await expect(page.get_by_role("heading", name=Q)).to_be_visible()
            await expect(page.locator("#chart-queue .uplot canvas")).to_have_count(1)
            await expect(page.locator("#chart-durations .uplot canvas")).to_have_count(1)
            await expect(page.locator("#queue-config")).to_contain_text("4 attempts")
            await expect(page.locator("#queue-config")).to_contain_text("no QueueConfig")
            await expect(page.locator('#queue-consumers tr[data-consumer="worker-a"]')).to_contain_text(
                "running"
            )
            await shot(page, artifacts, "queue", docs=True)
            await page.get_by_role("button", name=f"Pause {Q}").click()
            await expect(page.get_by_role("button", name=f"Resume {Q}")).to_be_visible()
            await expect(page.locator("#queue-config")).to_contain_text("paused")
            await page.get_by_role("button", name=f"Resume {Q}").click()
            await expect(page.get_by_role("button", name=f"Pause {Q}")).to_be_visible()

            # ---- jobs: the retrying job with its next retry; relative time, absolute on hover
            await page.get_by_role("tab", name="Jobs").click()
            await page.get_by_label("State").select_option("failed")
            job_row = page.locator(f'#jobs-table tr[data-job="{retrying}"]')
            await expect(job_row).to_contain_text("retrying")
            await expect(job_row).to_contain_text("1 / 4")
            due = job_row.locator("time").nth(1)
            await expect(due).to_have_text(re.compile(r"^in (60 min|1 h)$"))
            assert "(" in (await due.get_attribute("title") or "")  # absolute, with the time zone
            # bulk retry: the job runs now instead of in an hour, fails again, and waits once more
            await page.get_by_label(f"Select job {retrying}").check()
            await expect(page.locator("#jobs-selected")).to_have_text("1 selected")
            await page.get_by_role("button", name="Retry selected").click()
            await expect(page.locator("#jobs-status")).to_have_text("Retried 1 job(s)")
            await expect(job_row).to_contain_text("2 / 4")
            await expect(job_row).to_contain_text("retrying")
            await expect(page.get_by_role("button", name="Retry selected")).to_be_disabled()
            # the screenshots in docs/ show the stack as a deployment would, not this checkout's paths
            stack = (await redis_client.hget(keys.job(Q, retrying), "es")).decode()
            await redis_client.hset(keys.job(Q, retrying), "es", stack.replace(f"{REPO}/", "/app/"))
            # the list follows the stream: a new waiting job appears without a click
            await page.get_by_label("State").select_option("waiting")
            await expect(page.locator("#jobs-empty")).to_be_visible()

        # (the worker stopped: what is enqueued now stays waiting)
        waiting = [await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1}) for i in range(2)]
        await expect(page.locator("#jobs-table tbody tr")).to_have_count(2)
        await page.get_by_label("Select all shown").check()
        await expect(page.locator("#jobs-selected")).to_have_text("2 selected")
        await page.get_by_role("button", name="Remove selected").click()
        await expect(page.locator("#jobs-status")).to_have_text("Removed 2 job(s)")
        await expect(page.locator("#jobs-table tbody tr")).to_have_count(0)
        assert not await redis_client.exists(keys.job(Q, waiting[0]))

        # ---- one job: fields, failed attempts dated in this century, a wrapping stack
        await page.get_by_label("State").select_option("failed")
        await job_row.get_by_role("link", name=retrying).click()
        await expect(page.locator("#job-fields")).to_contain_text("retrying (failed, in backoff)")
        await expect(page.locator("#job-fields")).to_contain_text("next retry")
        failure_time = page.locator("#job-failures tbody time").first
        assert str(datetime.now(UTC).year) in (await failure_time.get_attribute("datetime") or "")
        await expect(page.locator("#job-stack")).to_contain_text("refused the connection")
        wrap = await page.locator("#job-stack").evaluate("e => getComputedStyle(e).whiteSpace")
        assert wrap == "pre-wrap"
        await expect(page.get_by_role("button", name="Retry now")).to_be_visible()
        await shot(page, artifacts, "job", docs=True)

        # ---- find a job by id from anywhere
        await page.get_by_role("link", name="Overview").click()
        await page.get_by_role("searchbox", name="Find job").fill(retrying)
        await page.get_by_role("button", name="Find", exact=True).click()
        await expect(page.locator("#job-title")).to_have_text(f"{Q} / {retrying}")
        await page.get_by_role("searchbox", name="Find job").fill("no-such-job")
        await page.get_by_role("button", name="Find", exact=True).click()
        await expect(page.locator("#message")).to_contain_text("no job no-such-job in any queue")
        await expect(page.locator("#job-body")).to_be_hidden()

        # ---- DLQ: grouped, filtered, bulk replay, replay all matching after its count, empty state
        await page.goto(f"{served.url}/#/queue/{Q}/dlq")
        groups = page.locator("#dlq-groups tbody tr")
        await expect(groups).to_have_count(1)
        await expect(groups.first).to_contain_text("NoHandler")
        await expect(groups.first.locator("td").nth(1)).to_have_text("5")
        entries = page.locator("#dlq-table tbody tr")
        await expect(entries).to_have_count(5)
        await shot(page, artifacts, "dlq", docs=True)
        await page.get_by_label("Text").fill("nothing-matches-this")
        await page.get_by_role("button", name="Filter", exact=True).click()
        await expect(entries).to_have_count(0)
        await expect(page.locator("#dlq-empty")).to_contain_text("No dead letter matches these filters")
        await expect(page.get_by_role("button", name="Replay all matching…")).to_be_disabled()
        await page.get_by_role("button", name="Clear filters").click()
        await expect(entries).to_have_count(5)
        await page.get_by_label("Since").fill("2099-01-01T00:00")  # the time filter
        await page.get_by_role("button", name="Filter", exact=True).click()
        await expect(entries).to_have_count(0)
        await expect(page.locator("#dlq-groups tbody tr")).to_contain_text("No dead letters")
        await page.get_by_role("button", name="Clear filters").click()
        await expect(entries).to_have_count(5)
        first = await entries.first.get_attribute("data-dlq")
        await page.get_by_label(f"Select {first}").check()
        await page.get_by_role("button", name="Replay selected").click()
        await expect(page.locator(f'#dlq-table tr[data-dlq="{first}"]')).to_have_count(0)
        await expect(entries).to_have_count(4)
        # bulk delete: two entries go, and no job is made from them (a replay would enqueue one)
        doomed = [await entries.nth(i).get_attribute("data-dlq") for i in (0, 1)]
        for dlq_id in doomed:
            await page.get_by_label(f"Select {dlq_id}").check()
        await expect(page.locator("#dlq-selected")).to_have_text("2 selected")
        waiting_before = (await jobs.counts(redis_client, Q))["waiting"]
        await page.get_by_role("button", name="Delete selected").click()
        await expect(page.locator("#dlq-status")).to_have_text("Deleted 2 entries")
        await expect(entries).to_have_count(2)
        for dlq_id in doomed:
            await expect(page.locator(f'#dlq-table tr[data-dlq="{dlq_id}"]')).to_have_count(0)
        await expect(groups.first.locator("td").nth(1)).to_have_text("2")
        assert int(await redis_client.xlen(keys.dlq(Q))) == 2
        assert (await jobs.counts(redis_client, Q))["waiting"] == waiting_before
        await page.get_by_role("button", name="Replay all matching…").click()
        await expect(page.locator("#dlq-confirm-text")).to_contain_text("This replays 2 entries")
        assert int(await redis_client.xlen(keys.dlq(Q))) == 2  # counted, not yet touched
        await page.get_by_role("button", name="Replay 2").click()
        await expect(entries).to_have_count(0)
        await expect(page.locator("#dlq-empty")).to_have_text(f"The DLQ of {Q} is empty: nothing to replay.")
        await expect(page.get_by_role("button", name="Replay all matching…")).to_be_disabled()
        await expect(page.get_by_role("button", name="Replay selected")).to_be_disabled()
        await expect(page.get_by_label("Type the queue name to purge its DLQ")).to_be_disabled()
        assert int(await redis_client.xlen(keys.dlq(Q))) == 0

        # ---- workers and schedules
        family = get_queue("ai:content").family
        ai_worker = Worker(
            redis_client,
            [spec for spec in all_queues() if spec.family == family],
            HandlerRegistry(),
            s.settings,
            consumer_id="worker-b",
            family=family,
        )
        await ai_worker.start()
        try:
            await page.get_by_role("link", name="Workers").click()
            worker = page.locator('#workers-table tr[data-consumer="worker-b"]')
            await expect(worker).to_contain_text("ai:content")
            await expect(worker.locator("td").nth(2)).to_have_text(family)
            await expect(worker).to_contain_text("running")
            await expect(worker.locator("time").last).to_have_text(re.compile(r"^(now|\d+ s ago)$"))
            await shot(page, artifacts, "workers", docs=True)
        finally:
            await ai_worker.stop()
        await page.get_by_role("link", name="Schedules").click()
        schedule = page.locator('#schedules-table tr[data-schedule="nightly-digest"]')
        await expect(schedule).to_contain_text("cron '0 2 * * *' UTC")
        await expect(schedule.locator("time").first).to_contain_text("in ")
        await page.get_by_role("button", name="Run nightly-digest now").click()
        await expect(schedule).to_contain_text("waiting")
        await page.get_by_role("button", name="Suspend nightly-digest").click()
        await expect(schedule).to_contain_text("suspended")
        assert (await schedules.get(redis_client, "nightly-digest")).suspend is True
        await page.get_by_role("button", name="Resume nightly-digest").click()
        await expect(page.get_by_role("button", name="Suspend nightly-digest")).to_be_visible()
        await shot(page, artifacts, "schedules", docs=True)
        await page.close()
    assert problems == []  # no script error, no blocked resource (CSP)
    print(f"screenshots in {artifacts}")


async def test_navigation_never_shows_stale_data(
    browser: Any, artifacts: Path, redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path))
    [dead] = await dead_letters(redis_client, s.settings, 1)
    expect = playwright_api.expect
    with serving(s) as served:
        page, problems = await open_page(browser, served.url, s)
        await page.goto(f"{served.url}/#/queue/{Q}/job/{dead}")
        await expect(page.locator("#job-payload")).to_contain_text('"limit"')
        await expect(page.get_by_role("button", name="Retry now")).to_be_visible()

        # a missing job: nothing of the previous one stays under the new title
        await page.goto(f"{served.url}/#/queue/{Q}/job/missing-job")
        await expect(page.locator("#job-title")).to_have_text(f"{Q} / missing-job")
        await expect(page.locator("#message")).to_contain_text("No job missing-job")
        await expect(page.locator("#message")).to_contain_text("Find job")
        await expect(page.locator("#job-body")).to_be_hidden()
        await expect(page.locator("#job-payload")).to_have_text("")
        await expect(page.get_by_role("button", name="Retry now")).to_be_hidden()

        # a queue, then an unknown one: no Pause button, no tabs, a message saying what to do
        await page.goto(f"{served.url}/#/queue/{Q}")
        await expect(page.get_by_role("button", name=f"Pause {Q}")).to_be_visible()
        await page.goto(f"{served.url}/#/queue/no:such")
        await expect(page.locator("#queue-title")).to_have_text("Unknown queue no:such")
        await expect(page.locator("#pause-toggle")).to_be_hidden()
        await expect(page.locator("#queue-tabs")).to_be_hidden()
        await expect(page.locator("#message")).to_contain_text("Pick one from the Queues list")

        # the banner clears on navigation
        await page.get_by_role("link", name="Overview").click()
        await expect(page.locator("#message")).to_be_hidden()

        # a malformed hash and an unknown page: a message, the overview, no script error
        await page.goto(f"{served.url}/#/queue/%E0%A4%A")
        await expect(page.locator("#message")).to_contain_text("not a page of this console")
        await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        await page.goto(f"{served.url}/#/nowhere/at/all")
        await expect(page.locator("#message")).to_contain_text("There is no page at #/nowhere/at/all")
        await page.get_by_role("button", name="Dismiss the message").click()
        await expect(page.locator("#message")).to_be_hidden()

        # the DLQ of one queue, then another queue's: the first one's rows are gone at once
        await page.goto(f"{served.url}/#/queue/{Q}/dlq")
        await expect(page.locator("#dlq-table tbody tr")).to_have_count(1)
        await page.get_by_label("Text").fill("no handler")
        await page.get_by_role("button", name="Filter", exact=True).click()
        await expect(page.locator("#dlq-table tbody tr")).to_have_count(1)
        await page.goto(f"{served.url}/#/queue/ai:content/dlq")
        await expect(page.locator("#dlq-table tbody tr")).to_have_count(0)
        await expect(page.get_by_label("Text")).to_have_value("")  # another queue's filter is not kept
        await expect(page.locator("#dlq-empty")).to_contain_text("The DLQ of ai:content is empty")
        await shot(page, artifacts, "stale-checks")
        await page.close()
    assert problems == []


async def test_narrow_dark_and_keyboard(
    browser: Any, artifacts: Path, redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path))
    await dead_letters(redis_client, s.settings, 1)
    expect = playwright_api.expect
    with serving(s) as served:
        page, problems = await open_page(
            browser, served.url, s, viewport={"width": 420, "height": 860}, color_scheme="dark"
        )
        # dark mode follows the system
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(20, 23, 28)"
        # 420 px: no view is wider than the window (wide tables scroll inside their own box)
        for hash_ in (
            "#/",
            "#/queues",
            f"#/queue/{Q}",
            f"#/queue/{Q}/jobs",
            f"#/queue/{Q}/dlq",
            "#/workers",
            "#/schedules",
        ):
            await page.goto(f"{served.url}/{hash_}")
            await page.wait_for_timeout(300)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 420, f"{hash_} is {width} px wide"
        await page.goto(f"{served.url}/#/")
        await expect(page.locator("#chart-history .uplot")).to_have_count(1)
        await shot(page, artifacts, "overview-420-dark", docs=True)

        # the keyboard reaches the navigation, and a sort button works with Enter
        await page.goto(f"{served.url}/#/queues")
        await page.reload()  # focus starts at the top of the document (the token stays in the tab)
        await expect(page.locator(f'#queue-table tr[data-queue="{Q}"]')).to_have_count(1)
        reached: list[str] = []
        for _ in range(40):
            await page.keyboard.press("Tab")
            reached.append(await page.evaluate("(document.activeElement.textContent || '').trim()"))
            if reached[-1] == "waiting":
                break
        assert "Queues" in reached and "Workers" in reached and "Find" in reached
        assert reached[-1] == "waiting"
        await page.keyboard.press("Enter")
        await expect(page.locator('#queue-table th[aria-sort="descending"]')).to_have_text("waiting")
        await page.close()
    assert problems == []


async def test_jobs_per_second_and_p95_of_a_queue_that_completed_jobs(
    browser: Any, redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    """jobs/s is taken over the last minute the page saw, not over one stats interval (which
    reads 0.00 as soon as an interval passes without a completion); the p95 column shows the
    stats leader's p95 duration of the completed jobs."""
    s = admin_settings(redis_url, sqlite_database(tmp_path))
    handlers = HandlerRegistry()

    @handlers.register(Q, "send-email")
    async def send(ctx: Any, payload: Any) -> None:
        await asyncio.sleep(0.05)  # every job takes at least 50 ms

    expect = playwright_api.expect
    with serving(s) as served:
        page, problems = await open_page(browser, served.url, s)
        await page.get_by_role("link", name="Queues", exact=True).click()
        rate_cell = page.locator(f'#queue-table tr[data-queue="{Q}"] [data-field="rate"]')
        await expect(rate_cell).to_have_text("-")  # nothing seen yet, no stats leader
        await page.wait_for_timeout(5500)  # the page's window needs a few seconds to measure
        producer = Producer(redis_client, s.settings)
        async with running(redis_client, s.settings, handlers, queue=Q):
            for _ in range(3):
                await producer.enqueue(Q, "send-email", EMAIL)
            await expect(
                page.locator(f'#queue-table tr[data-queue="{Q}"] [data-field="waiting"]')
            ).to_have_text("0")
            await expect(rate_cell).to_have_text(re.compile(r"^0\.[0-9]*[1-9][0-9]*$"))
        # p95: none until a stats leader measured the completed jobs, then theirs, live
        p95_cell = page.locator(f'#queue-table tr[data-queue="{Q}"] [data-field="p95"]')
        await expect(p95_cell).to_have_text("-")
        await StatsLeader(redis_client, settings=s.settings).tick()
        await expect(p95_cell).to_have_text(re.compile(r"^[0-9]+$"))
        assert 50 <= int(await p95_cell.text_content() or 0) < 5000
        await page.close()
    assert problems == []


async def test_job_page_shows_progress_live_and_cancels_a_running_job(
    browser: Any, artifacts: Path, redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    """Issue 18: the job page's progress bar follows the job's ``job.progress`` events, and its
    Cancel button cancels the running job on its worker (the handler's cleanup runs)."""
    s = admin_settings(redis_url, sqlite_database(tmp_path))
    handlers = HandlerRegistry()
    cleaned: list[str] = []

    @handlers.register(Q, "send-email")
    async def send(ctx: Any, payload: Any) -> None:
        try:
            for step in range(1, 1000):
                await ctx.progress(min(0.99, step / 100), f"step {step}")
                await asyncio.sleep(0.6)  # one report per throttle interval: each one lands
        finally:
            cleaned.append(ctx.job_id)

    expect = playwright_api.expect
    with serving(s) as served:
        page, problems = await open_page(browser, served.url, s)
        async with running(redis_client, s.settings, handlers, queue=Q):
            job_id = await Producer(redis_client, s.settings).enqueue(Q, "send-email", EMAIL)
            await page.goto(f"{served.url}/#/queue/{Q}/job/{job_id}")
            await expect(page.locator("#job-progress")).to_be_visible()
            # live: later reports arrive over the event stream without a reload
            await expect(page.locator("#job-progress-text")).to_contain_text(re.compile(r"step [3-9]"))
            text = await page.locator("#job-progress-text").text_content()
            assert text is not None and re.fullmatch(r"\d+% - step \d+", text), text
            value = float(await page.locator("#job-progress-bar").get_attribute("value") or 0)
            assert 0.02 <= value < 1
            await shot(page, artifacts, "job-progress", docs=True)
            await page.get_by_role("button", name="Cancel job").click()
            await expect(page.locator("#job-fields")).to_contain_text("cancelled", timeout=10_000)
            await expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
            await wait_for(lambda: cleaned == [job_id], what="the handler's cleanup")
        rec = await redis_client.hget(keys.job(Q, job_id), "s")
        assert rec == b"cancelled"
        assert int(await redis_client.hget(keys.counters(Q), "cancelled") or 0) == 1
        await page.close()
    assert problems == []
