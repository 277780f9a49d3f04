"""The console's queues panel and charts in real Chromium: the sparkline drawn, pause/resume, the range switch.

Same set-up as test_console_browser.py (Debian's /usr/bin/chromium through Playwright); a
screenshot of each panel under test-artifacts/console-<panel>-<database>.png.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from tasks import counters
from tasks.models import QueueConfig, TaskStatus
from tasks.tests import test_dashboard_browser
from tasks.tests.conftest import enqueue_many
from tasks.tests.factories import finished_fields, make_task
from tasks.tests.test_console_browser import screenshot, sign_in

browser_page = test_dashboard_browser.browser_page  # the fixture: real Chromium, headless

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def history(owner, queue: QueueConfig) -> None:
    """Tasks that finished over the last week, some failed, with varied wait and run times (counted)."""
    now = timezone.now()
    with transaction.atomic():
        tasks = []
        for index in range(240):
            # The last hour unevenly (more in its first 17 minutes), then two days back.
            minutes = index % 60 if index % 3 else index % 17
            ago = timedelta(minutes=minutes, hours=(index // 60) * 20 if index >= 120 else 0)
            status = TaskStatus.FAILED if index % 7 == 0 else TaskStatus.SUCCEEDED
            wait, run = 0.2 + (index % 11) * 0.9, 0.05 + (index % 5) * 0.6
            end = now - ago
            fields = finished_fields(status, created=end - timedelta(seconds=wait + run), wait=wait, run=run)
            tasks.append(make_task(owner, queue=queue, **fields))
        counters.record_finished(tasks)


def test_queues_panel_draws_the_sparkline_and_pauses_and_resumes_a_queue(
    live_server, staff, alice, default_queue, emails_queue, browser_page
):
    page = browser_page
    QueueConfig.objects.filter(pk=emails_queue.pk).update(max_concurrency=4, rate_limit="30/m")
    history(alice, default_queue)
    enqueue_many(alice, 5)
    try:
        sign_in(page, live_server, "/admin/taskhub/console/queues/")
        row = page.locator("#th-queues tr[data-queue='default']")
        assert row.locator("td.th-pending").inner_text() == "5"
        points = row.locator("svg.th-spark polyline.th-line-succeeded").get_attribute("points").split()
        assert len(points) == 60
        assert len({p.split(",")[1] for p in points}) > 1, "the sparkline is flat: nothing drawn"
        assert "30/m" in page.locator("#th-queues tr[data-queue='emails'] td.th-limits").inner_text()
        page.evaluate("window.__sameDocument = true")

        row.locator("button.th-toggle").click()
        page.wait_for_selector("#th-queues tr[data-queue='default'][data-paused='true']")
        assert QueueConfig.objects.get(pk=default_queue.pk).is_paused
        screenshot(page, "queues")

        page.locator("#th-queues tr[data-queue='default'] button.th-toggle").click()
        page.wait_for_selector("#th-queues tr[data-queue='default'][data-paused='false']")
        assert not QueueConfig.objects.get(pk=default_queue.pk).is_paused
        assert page.evaluate("window.__sameDocument") is True
    finally:
        screenshot(page, "queues-final")


def test_charts_page_switches_range_and_queue(live_server, staff, alice, default_queue, emails_queue, browser_page):
    page = browser_page
    history(alice, default_queue)
    try:
        sign_in(page, live_server, "/admin/taskhub/console/charts/")
        line = "#th-chart-counts polyline[data-series=succeeded]"
        assert len(page.locator(line).get_attribute("points").split()) == 60
        assert int(page.locator("[data-total=succeeded]").inner_text()) > 0
        assert page.locator("[data-pct=wait-p95]").inner_text() != "—"
        hour_total = page.locator("[data-total=succeeded]").inner_text()

        page.click("[data-range-choice='7d']")
        page.wait_for_function(f"document.querySelector('{line}').getAttribute('points').split(' ').length === 168")
        assert page.locator("[data-range-choice='7d']").get_attribute("class").find("th-current") != -1
        assert int(page.locator("[data-total=succeeded]").inner_text()) > int(hour_total)
        screenshot(page, "charts")

        page.select_option("#th-chart-queue", "emails")
        page.wait_for_function("document.querySelector('[data-total=succeeded]').textContent === '0'")
        assert page.locator("#th-chart-empty").is_visible()
        page.click("[data-range-choice='24h']")
        page.wait_for_function(f"document.querySelector('{line}').getAttribute('points').split(' ').length === 24")
    finally:
        screenshot(page, "charts-final")
