"""The Schedules and Keys pages and the queue limits edited in place, in real Chromium.

Same set-up as test_console_browser.py (Debian's /usr/bin/chromium through Playwright); a
screenshot of each under test-artifacts/console-<panel>-<database>.png.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.models import QueueConfig, Schedule, ScheduleFire, ScheduleFireOutcome, TaskQueue, TaskStatus
from tasks.tests import test_dashboard_browser
from tasks.tests.conftest import enqueue_many
from tasks.tests.test_console_browser import screenshot, sign_in
from tasks.tests.test_console_pages import make_schedule, run

browser_page = test_dashboard_browser.browser_page  # the fixture: real Chromium, headless

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def test_schedules_page_pauses_a_schedule_and_runs_one_now(live_server, staff, alice, default_queue, browser_page):
    page = browser_page
    nightly = make_schedule(alice, default_queue, "nightly report", interval_seconds=None, cron="0 3 * * *")
    often = make_schedule(alice, default_queue, "sync often", interval_seconds=300)
    ScheduleFire.objects.create(
        schedule=often, fire_time=timezone.now() - timedelta(minutes=5), outcome=ScheduleFireOutcome.FIRED
    )
    try:
        sign_in(page, live_server, "/admin/taskhub/console/schedules/")
        row = page.locator(f"#th-schedules tr[data-schedule='{nightly.pk}']")
        assert "0 3 * * *" in row.locator("td.th-timing").inner_text()
        assert row.locator("td.th-last").inner_text() == "never"
        assert "Fired" in page.locator(f"#th-schedules tr[data-schedule='{often.pk}'] td.th-last").inner_text()
        page.evaluate("window.__sameDocument = true")

        row.locator("button.th-toggle").click()
        page.wait_for_selector(f"#th-schedules tr[data-schedule='{nightly.pk}'][data-paused='true']")
        assert Schedule.objects.get(pk=nightly.pk).is_paused

        row.locator("button.th-run-now").click()
        page.wait_for_function(
            f"document.querySelector(\"#th-schedules tr[data-schedule='{nightly.pk}'] td.th-last\")"
            ".textContent.indexOf('Run now') !== -1"
        )
        task = TaskQueue.objects.get(schedule=nightly)
        assert task.status == TaskStatus.PENDING
        assert f"#{task.pk}" in page.locator("#th-message").inner_text()
        assert page.evaluate("window.__sameDocument") is True
        screenshot(page, "schedules")
    finally:
        screenshot(page, "schedules-final")


def test_keys_page_shows_full_keys_and_live_unique_keys_and_follows_them(
    live_server, staff, alice, bob, default_queue, browser_page
):
    page = browser_page
    QueueConfig.objects.filter(pk=default_queue.pk).update(per_key_concurrency=2)
    full = enqueue_many(alice, 2, concurrency_key="tenant-a")
    run(full)
    run(enqueue_many(alice, 1, concurrency_key="tenant-b"))
    held = enqueue_many(bob, 1, unique_key="report-2026-12")[0]
    enqueue_many(alice, 1, unique_key="sync-acme")
    try:
        sign_in(page, live_server, "/admin/taskhub/console/keys/")
        key_row = page.locator("#th-full-keys tr[data-key='tenant-a']")
        assert key_row.locator("td.th-running").inner_text() == "2"
        assert page.locator("#th-full-keys tr[data-key='tenant-b']").count() == 0
        assert page.locator("#th-unique-keys tbody tr").count() == 2
        assert "report-2026-12" in page.locator(f"#th-unique-keys tr[data-task='{held.pk}']").inner_text()
        screenshot(page, "keys")

        # One tenant-a task finishes and bob's keyed task is cancelled: both leave without a reload.
        TaskQueue.objects.filter(pk=full[0].pk).update(status=TaskStatus.SUCCEEDED, finished_at=timezone.now())
        TaskQueue.objects.filter(pk=held.pk).update(status=TaskStatus.CANCELLED, finished_at=timezone.now())
        page.wait_for_selector("#th-full-keys tr[data-key='tenant-a']", state="detached", timeout=15000)
        page.wait_for_selector(f"#th-unique-keys tr[data-task='{held.pk}']", state="detached", timeout=15000)
        assert "No concurrency key is at its limit." in page.locator("#th-full-keys").inner_text()
    finally:
        screenshot(page, "keys-final")


def test_queue_limits_are_edited_in_place_and_a_bad_value_is_refused_naming_the_field(
    live_server, staff, default_queue, emails_queue, browser_page
):
    page = browser_page
    try:
        sign_in(page, live_server, "/admin/taskhub/console/queues/")
        page.evaluate("window.__sameDocument = true")
        page.locator("#th-queues tr[data-queue='default'] button.th-edit-limits").click()
        form = page.locator("#th-limits-form")
        assert form.is_visible()
        assert page.locator("#th-limits-title").inner_text() == "Limits of default"
        assert page.input_value("#th-max-concurrency") == "0"

        page.fill("#th-max-concurrency", "7")
        page.select_option("#th-fairness", "owner")
        page.fill("#th-per-key-concurrency", "3")
        page.fill("#th-rate-limit", "fast")
        page.check("#th-rate-limit-per-key")
        form.locator("input[type=submit]").click()
        page.wait_for_function("document.querySelector('#th-message').textContent.indexOf('(invalid)') !== -1")
        assert "rate_limit" in page.locator("#th-message").inner_text()
        assert "th-invalid" in page.get_attribute("#th-rate-limit", "class")
        assert QueueConfig.objects.get(pk=default_queue.pk).max_concurrency == 0  # nothing saved
        page.wait_for_timeout(3500)  # a refresh of the table leaves what is being typed alone
        assert page.input_value("#th-max-concurrency") == "7"

        page.fill("#th-rate-limit", "120/m")
        form.locator("input[type=submit]").click()
        page.wait_for_function("document.querySelector('#th-message').textContent.indexOf('saved') !== -1")
        limits = page.locator("#th-queues tr[data-queue='default'] td.th-limits")
        page.wait_for_function(
            "document.querySelector(\"#th-queues tr[data-queue='default'] td.th-limits\").textContent"
            ".indexOf('120/m') !== -1"
        )
        assert "concurrency 7" in limits.inner_text() and "fairness owner" in limits.inner_text()
        assert not form.is_visible()
        queue = QueueConfig.objects.get(pk=default_queue.pk)
        assert (queue.max_concurrency, queue.fairness, queue.per_key_concurrency) == (7, "owner", 3)
        assert (queue.rate_limit, queue.rate_limit_per_key) == ("120/m", True)
        assert page.evaluate("window.__sameDocument") is True
        page.locator("#th-queues tr[data-queue='default'] button.th-edit-limits").click()
        screenshot(page, "queue-limits")
    finally:
        screenshot(page, "queue-limits-final")
