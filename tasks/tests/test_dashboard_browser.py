"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

No browser is downloaded (`playwright install` is never run): Playwright launches
/usr/bin/chromium. Without it the test is skipped loudly; with CI=true it fails, because CI
installs Chromium (`scripts/ensure-test-tools`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tasks import counters
from tasks.models import QueueConfig, TaskStatus, WorkerProcess
from tasks.tests.factories import finished_fields, make_task

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
WAIT_MS = 30_000


def require_chromium() -> None:
    """Skip (fail under CI=true) when Debian's Chromium is not installed."""
    if CHROMIUM.exists():
        return
    reason = (
        f"BROWSER TEST NOT RUN: {CHROMIUM} is missing. Install it with `apt-get install chromium` "
        "(scripts/ensure-test-tools does so in CI)."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser_page(monkeypatch) -> Iterator:
    require_chromium()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, so Django sees an "async
    # context" and refuses ORM calls; the test's own queries are plain sequential code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


@pytest.mark.django_db(transaction=True)
def test_staff_pauses_a_queue_from_the_dashboard_and_the_page_updates_without_reloading(
    live_server, staff, default_queue, alice, browser_page
):
    page = browser_page
    make_task(alice)
    for _ in range(2):
        make_task(alice, task_type="sleep", error="TimeoutError: slept too long", **finished_fields(TaskStatus.FAILED))
    counters.rebuild()
    WorkerProcess.objects.create(worker_id="host-a:4242", hostname="host-a", pid=4242, queues=["default"])
    screenshot = ARTIFACTS / f"dashboard-{connection.vendor}.png"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", "staff-password-1")
        page.click("input[type=submit]")
        page.click("#taskhub-dashboard-link a")
        page.wait_for_url("**/admin/taskhub/dashboard/")

        row = page.locator("#th-queues tr[data-queue=default]")
        assert row.locator("td").nth(1).inner_text() == "active"
        assert row.locator("td").nth(2).inner_text() == "1"
        assert page.locator("#th-chart svg rect.th-hit").count() == 24
        assert page.locator("#th-chart svg rect.th-failed").count() == 1
        assert "TimeoutError: slept too long" in page.inner_text("#th-failing")
        assert "host-a" in page.inner_text("#th-workers")
        # Set on this document: a full reload would lose it.
        page.evaluate("window.__sameDocument = true")

        row.locator("button", has_text="Pause").click()
        page.wait_for_function(
            "document.querySelector('#th-queues tr[data-queue=default] td:nth-child(2)').textContent === 'paused'"
        )
        assert QueueConfig.objects.get(name="default").is_paused is True
        assert "default" in page.inner_text("#th-message")
        assert row.locator("button", has_text="Resume").count() == 1

        # The page polls its JSON feed: work enqueued elsewhere appears by itself.
        make_task(alice)
        page.wait_for_function(
            "document.querySelector('#th-queues tr[data-queue=default] td:nth-child(3)').textContent === '2'"
        )
        assert page.evaluate("window.__sameDocument") is True
    finally:
        page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0
