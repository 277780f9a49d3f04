"""The Workers and Stuck panels in real Chromium (Playwright, Debian's /usr/bin/chromium).

The drain runs against a real `run_worker` process: the button is clicked, the worker sees the
request at its next heartbeat, finishes its slow task and exits 0; the page follows by polling.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import console_search
from tasks.models import BulkAction, TaskQueue, TaskStatus, WorkerProcess
from tasks.tests import test_dashboard_browser
from tasks.tests.conftest import enqueue_many, wait_for
from tasks.tests.test_console_browser import screenshot, sign_in
from tasks.tests.test_console_workers import make_worker, run

browser_page = test_dashboard_browser.browser_page  # the fixture: real Chromium, headless

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def test_the_workers_panel_drains_a_real_worker(live_server, staff, alice, default_queue, browser_page, start_worker):
    page = browser_page
    slow = enqueue_many(alice, 1, task_type="sleep", payload={"seconds": 4})[0]
    worker = start_worker()
    wait_for(
        lambda: TaskQueue.objects.filter(
            pk=slow.pk, status=TaskStatus.RUNNING, progress_message__startswith="slept"
        ).exists(),
        what="the slow task to start",
    )
    waiting = enqueue_many(alice, 2)
    worker_id = WorkerProcess.objects.get().worker_id
    try:
        sign_in(page, live_server, "/admin/taskhub/console/workers/")
        row = page.locator(f"#th-workers tr[data-worker='{worker_id}']")
        page.wait_for_function(
            f"document.querySelector(\"#th-workers tr[data-worker='{worker_id}'] td.th-current\")"
            f".textContent.indexOf('#{slow.pk} sleep') !== -1"
        )
        assert str(worker.pid) in row.inner_text()
        page.wait_for_function(
            f"document.querySelector(\"#th-workers tr[data-worker='{worker_id}'] td.th-memory\").textContent"
            ".indexOf('MB') !== -1"
        )
        page.on("dialog", lambda dialog: dialog.accept())
        row.locator("button[data-action=drain]").click()
        page.wait_for_selector(f"#th-workers tr[data-worker='{worker_id}'][data-draining=yes]")
        assert "will drain" in page.locator("#th-message").inner_text()
        screenshot(page, "workers")
        assert worker.wait(60) == 0
        page.wait_for_selector(f"#th-workers tr[data-worker='{worker_id}']", state="detached")
    finally:
        screenshot(page, "workers-drained")
    assert TaskQueue.objects.get(pk=slow.pk).status == TaskStatus.SUCCEEDED
    assert TaskQueue.objects.filter(pk__in=[t.pk for t in waiting], status=TaskStatus.PENDING).count() == 2
    assert BulkAction.objects.get().filters == {"worker": worker_id}


def test_the_stuck_panel_shows_lost_leases_silent_workers_and_long_waits(
    live_server, staff, alice, default_queue, browser_page
):
    page = browser_page
    gone = make_worker("host-lost:4242:abc", last_heartbeat_at=timezone.now() - timedelta(minutes=10))
    late = enqueue_many(alice, 1, task_type="sleep")[0]
    run(late, gone, lease_seconds=-120)
    enqueue_many(alice, 1, run_at=timezone.now() - timedelta(hours=2))
    try:
        sign_in(page, live_server, "/admin/taskhub/console/stuck/")
        assert page.locator(f"#th-past-lease tr[data-task='{late.pk}']").count() == 1
        assert page.locator(f"#th-silent tr[data-worker='{gone.worker_id}']").count() == 1
        assert page.locator("#th-waiting tr[data-queue='default']").count() == 1
        screenshot(page, "stuck")
        # The lease is taken back (as a live worker would): the row leaves the page without a reload.
        TaskQueue.objects.filter(pk=late.pk).update(status=TaskStatus.PENDING, claimed_by="", lease_expires_at=None)
        page.wait_for_selector(f"#th-past-lease tr[data-task='{late.pk}']", state="detached")
        assert "No running task is past its lease." in page.locator("#th-past-lease").inner_text()
    finally:
        screenshot(page, "stuck-end")


def test_task_search_pages_refuses_an_unindexed_filter_and_opens_the_bulk_form_prefilled(
    live_server, staff, alice, bob, default_queue, browser_page, monkeypatch
):
    monkeypatch.setattr(console_search, "PAGE_SIZE", 5)
    mine = enqueue_many(alice, 8, task_type="echo")
    enqueue_many(bob, 3)
    page = browser_page
    try:
        sign_in(page, live_server, "/admin/taskhub/console/tasks/")
        page.select_option("#th-search-form [name=status]", "failed")
        page.click("#th-search-form input[type=submit]")
        page.wait_for_function("document.querySelector('#th-message').textContent.indexOf('filter_not_indexed') !== -1")
        assert page.locator("#th-bulk-link").is_hidden()

        page.select_option("#th-search-form [name=status]", "pending")
        page.fill("#th-search-form [name=owner]", "alice")
        page.click("#th-search-form input[type=submit]")
        page.wait_for_selector(f"#th-tasks tr[data-task='{mine[-1].pk}']")
        assert page.locator("#th-tasks tbody tr").count() == 5
        page.click("#th-more")
        page.wait_for_selector(f"#th-tasks tr[data-task='{mine[0].pk}']")
        ids = [int(x) for x in page.locator("#th-tasks tbody tr").evaluate_all("rows => rows.map(r => r.dataset.task)")]
        assert ids == sorted((t.pk for t in mine), reverse=True)
        assert page.locator("#th-more").is_hidden()
        screenshot(page, "tasks")

        page.click("#th-bulk-link")
        page.wait_for_url("**/console/bulk/?*")
        page.wait_for_function("document.querySelector('#th-bulk-form [name=owner]').value === 'alice'")
        assert page.locator("#th-bulk-form [name=status]").input_value() == "pending"
        page.select_option("#th-action", "cancel")
        page.click("#th-bulk-form input[type=submit]")
        page.wait_for_selector("#th-actions tr[data-state=queued]")
        assert BulkAction.objects.get().filters == {"owner": "alice", "status": "pending"}
    finally:
        screenshot(page, "tasks-end")
