"""The console's panels in real Chromium: failure groups and each bulk action, end to end.

Playwright drives Debian's /usr/bin/chromium (never a downloaded browser; see
test_dashboard_browser.py). The bulk actions are carried out by the runner the test calls, as the
`run_bulk_actions` process would; the page sees the result by polling its JSON feed.
"""

from __future__ import annotations

import pytest
from django.db import connection

from tasks import bulk
from tasks.models import BulkAction, BulkActionState, FailureGroup, TaskQueue, TaskStatus
from tasks.tests import test_dashboard_browser
from tasks.tests.conftest import enqueue_many, fail_for_good

ARTIFACTS = test_dashboard_browser.ARTIFACTS
browser_page = test_dashboard_browser.browser_page  # the fixture: real Chromium, headless

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def sign_in(page, live_server, path: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next={path}")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "staff-password-1")
    page.click("input[type=submit]")
    page.wait_for_url(f"**{path}")


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}-{connection.vendor}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0


def test_failure_groups_panel_shows_groups_and_retries_one_in_bulk(
    live_server, staff, alice, default_queue, browser_page
):
    page = browser_page
    failed = fail_for_good(alice, 4, error="NotFound: user {i} not found\n\nTraceback (most recent call last):\n  x")
    fail_for_good(alice, 2, error="DiskFull: no space left", exception="app.errors.DiskFull")
    group = FailureGroup.objects.get(pk=failed[0].failure_group_id)
    try:
        sign_in(page, live_server, "/admin/taskhub/console/failures/")
        row = page.locator(f"#th-groups tr[data-group='{group.key}']")
        assert row.locator("td.th-count").inner_text() == "4"
        assert "NotFound: user <n> not found" in row.inner_text()
        assert page.locator("#th-groups tbody tr").count() == 2
        row.locator("summary").click()
        assert "Traceback" in row.locator("pre").inner_text()
        page.evaluate("window.__sameDocument = true")

        row.locator("button[data-action=retry]").click()
        page.wait_for_function("document.querySelector('#th-message').textContent.indexOf('#') !== -1")
        action = BulkAction.objects.get()
        assert (action.action, action.filters, action.created_by) == ("retry", {"failure_group": group.key}, staff)

        bulk.bulk_actions_run_pending()
        page.wait_for_function(
            f"document.querySelector(\"#th-groups tr[data-group='{group.key}'] td.th-count\").textContent === '0'"
        )
        assert page.evaluate("window.__sameDocument") is True
        assert TaskQueue.objects.filter(pk__in=[t.pk for t in failed], status=TaskStatus.PENDING).count() == 4
    finally:
        screenshot(page, "failure-groups")


ACTIONS = {
    # action: (form fields, what the tasks look like afterwards)
    "retry": {"owner": "alice", "status": "failed"},
    "cancel": {"status": "pending", "queue": "default"},
    "delete": {"status": "pending", "queue": "default"},
    "priority": {"status": "pending", "queue": "default", "priority": "9"},
    "move": {"status": "pending", "queue": "default", "target_queue": "emails"},
}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_each_bulk_action_from_the_form_runs_and_shows_its_progress(
    live_server, staff, alice, default_queue, emails_queue, browser_page, action
):
    page = browser_page
    tasks = fail_for_good(alice, 3, error="E: x") if action == "retry" else enqueue_many(alice, 3)
    other = enqueue_many(alice, 1, queue=emails_queue)[0]
    try:
        sign_in(page, live_server, "/admin/taskhub/console/bulk/")
        page.select_option("#th-action", action)
        for name, value in ACTIONS[action].items():
            selector = f"#th-bulk-form [name={name}]"
            if page.locator(selector).evaluate("node => node.tagName") == "SELECT":
                page.select_option(selector, value)
            else:
                page.fill(selector, value)
        page.click("#th-bulk-form input[type=submit]")
        page.wait_for_selector("#th-actions tr[data-state=queued]")
        recorded = BulkAction.objects.get()
        assert (recorded.action, recorded.created_by) == (action, staff)

        bulk.bulk_actions_run_pending()
        page.wait_for_selector(f"#th-actions tr[data-action='{recorded.pk}'][data-state=done]")
        assert page.locator(f"#th-actions tr[data-action='{recorded.pk}'] td.th-changed").inner_text() == "3"
        assert BulkAction.objects.get().state == BulkActionState.DONE
    finally:
        screenshot(page, f"bulk-{action}")

    pks = [t.pk for t in tasks]
    rows = TaskQueue.objects.filter(pk__in=pks)
    if action == "retry":
        assert rows.filter(status=TaskStatus.PENDING).count() == 3
    elif action == "cancel":
        assert rows.filter(status=TaskStatus.CANCELLED).count() == 3
    elif action == "delete":
        assert not rows.exists()
    elif action == "priority":
        assert rows.filter(priority=9).count() == 3
    else:
        assert rows.filter(queue=emails_queue).count() == 3
    assert TaskQueue.objects.get(pk=other.pk).status == TaskStatus.PENDING


def test_a_refused_filter_is_explained_on_the_page(live_server, staff, default_queue, browser_page):
    page = browser_page
    try:
        sign_in(page, live_server, "/admin/taskhub/console/bulk/")
        page.select_option("#th-action", "retry")
        page.select_option("#th-bulk-form [name=status]", "failed")
        page.click("#th-bulk-form input[type=submit]")
        page.wait_for_function("document.querySelector('#th-message').textContent.indexOf('filter_not_indexed') !== -1")
        assert not BulkAction.objects.exists()
    finally:
        screenshot(page, "bulk-refused")
