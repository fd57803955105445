"""The owner's web page in headless Chromium (Debian's package, driven by Playwright with that
system browser): sign in with a token, watch the queue list update live from the SSE stream as
jobs are enqueued, open a queue's DLQ, replay an entry and see it leave the table. Screenshots go
to ``TQ_TEST_ARTIFACTS`` (default: the test's tmp dir) and their paths are printed."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.admin import NO_HANDLER_JOB, Q, admin_settings, dead_letters, serving, sqlite_database, token
from tq import keys
from tq.producer import Producer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (apt-get install chromium)")


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
    out = Path(os.environ.get("TQ_TEST_ARTIFACTS", tmp_path)) / "admin-browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


async def test_sign_in_live_queue_list_and_dlq_replay(
    browser: Any, artifacts: Path, redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path))
    await dead_letters(redis_client, s.settings, 2)
    with serving(s) as served:
        page = await browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        expect = playwright_api.expect

        await page.goto(served.url + "/")
        await page.get_by_label("Owner token").fill(token(s, subject="browser"))
        await page.get_by_role("button", name="Sign in").click()
        row = page.locator(f'#queue-table tr[data-queue="{Q}"]')
        await expect(row.locator('[data-field="dead"]')).to_have_text("2")
        await expect(page.locator("#live")).to_have_class("on")
        await expect(row.locator('[data-field="waiting"]')).to_have_text("0")
        await page.screenshot(path=str(artifacts / "1-queues.png"), full_page=True)

        producer = Producer(redis_client, s.settings)
        for i in range(3):  # the list follows the SSE stream: no reload, no click
            await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1})
        await expect(row.locator('[data-field="waiting"]')).to_have_text("3")
        await page.screenshot(path=str(artifacts / "2-queues-live.png"), full_page=True)

        await row.get_by_role("link", name=Q).click()
        await expect(page.get_by_role("heading", name=Q)).to_be_visible()
        await page.get_by_role("tab", name="DLQ").click()
        entries = page.locator("#dlq-table tbody tr")
        await expect(entries).to_have_count(2)
        first = await entries.first.get_attribute("data-dlq")
        await page.screenshot(path=str(artifacts / "3-dlq.png"), full_page=True)
        await page.get_by_role("button", name=f"Replay {first}").click()
        await expect(page.locator(f'#dlq-table tr[data-dlq="{first}"]')).to_have_count(0)
        await expect(entries).to_have_count(1)
        assert int(await redis_client.xlen(keys.dlq(Q))) == 1
        await page.screenshot(path=str(artifacts / "4-dlq-replayed.png"), full_page=True)

        # job detail: payload, attempts, error, timeline
        remaining = await entries.first.get_attribute("data-dlq")
        await entries.first.get_by_role("link").click()
        await expect(page.locator("#job-payload")).to_contain_text('"limit"')
        await expect(page.locator("#job-fields")).to_contain_text("dead")
        await expect(page.locator("#job-stack")).to_contain_text("no handler")
        await expect(page.locator("#job-timeline li").first).to_contain_text("enqueued")
        await page.screenshot(path=str(artifacts / "5-job.png"), full_page=True)
        await page.get_by_role("link", name="Back to the queue").click()
        await page.get_by_role("tab", name="DLQ").click()
        await expect(page.locator(f'#dlq-table tr[data-dlq="{remaining}"]')).to_have_count(1)

        # purge needs the queue name typed before its button works
        purge = page.get_by_role("button", name="Purge DLQ")
        await expect(purge).to_be_disabled()
        await page.get_by_label("Type the queue name to purge its DLQ").fill(Q)
        await expect(purge).to_be_enabled()
        await purge.click()
        await expect(entries).to_have_count(0)
        assert int(await redis_client.xlen(keys.dlq(Q))) == 0
        await page.get_by_role("tab", name="Metrics").click()
        await expect(page.locator("#metrics-table thead th").first).to_have_text("bucket")
        await page.close()
    assert problems == []  # no script error, no blocked resource (CSP)
    print(f"screenshots in {artifacts}")
