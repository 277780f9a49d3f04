"""The console's pages and JSON: staff only, CSRF on every POST, bad input a 400 with a code, bounded reads."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tasks.models import BulkAction, BulkActionState, FailureGroup, TaskQueue
from tasks.tests.conftest import enqueue_many, fail_for_good

pytestmark = pytest.mark.django_db

FAILURES = "/admin/taskhub/console/failures/"
FAILURES_DATA = "/admin/taskhub/console/failures/data/"
BULK = "/admin/taskhub/console/bulk/"
BULK_DATA = "/admin/taskhub/console/bulk/data/"


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", FAILURES), ("get", FAILURES_DATA), ("get", BULK), ("get", BULK_DATA), ("post", BULK),
     ("get", f"{FAILURES}{'a' * 40}/tasks/")],
)  # fmt: skip
def test_anyone_but_staff_gets_403_and_nothing_is_recorded(client, alice, default_queue, method, path):
    enqueue_many(alice, 1)
    for user in (None, alice):
        if user:
            client.force_login(user)
        response = getattr(client, method)(path, {"action": "cancel", "status": "pending"})
        assert response.status_code == 403
        assert response.json()["code"] == "staff_only"
    assert not BulkAction.objects.exists()


def test_a_post_without_the_csrf_token_is_refused(staff, default_queue):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    response = client.post(BULK, {"action": "cancel", "status": "pending"})
    assert response.status_code == 403
    assert not BulkAction.objects.exists()
    page = client.get(BULK)
    token = page.cookies["csrftoken"].value
    response = client.post(BULK, {"action": "cancel", "status": "pending"}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 202


def test_staff_without_the_change_permission_gets_403(django_user_model, default_queue):
    clerk = django_user_model.objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    client = Client()
    client.force_login(clerk)
    response = client.post(BULK, {"action": "cancel", "status": "pending"})
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"action": "retry", "status": "failed"}, "filter_not_indexed"),
        ({"action": "retry", "queue": "default"}, "filter_not_indexed"),
        ({"action": "retry", "status": "pending", "colour": "red"}, "unknown_filter"),
        ({"action": "nope", "status": "pending"}, "invalid_action"),
        ({"action": "priority", "status": "pending", "priority": "x"}, "invalid_priority"),
    ],
)
def test_bad_input_is_a_400_with_a_stable_code(staff_client, default_queue, data, code):
    response = staff_client.post(BULK, data)
    assert response.status_code == 400
    assert response.json()["code"] == code and response.json()["detail"]
    assert not BulkAction.objects.exists()


def test_a_post_records_the_action_for_the_audit_list(staff_client, staff, alice, default_queue):
    tasks = fail_for_good(alice, 2, error="E: x")
    response = staff_client.post(BULK, {"action": "retry", "failure_group": tasks[0].failure_group_id})
    assert response.status_code == 202
    body = response.json()["action"]
    assert (body["action"], body["state"], body["by"]) == ("retry", BulkActionState.QUEUED, "staff")
    audit = staff_client.get(BULK_DATA).json()["actions"]
    assert [(a["id"], a["filters"]) for a in audit] == [(body["id"], {"failure_group": tasks[0].failure_group_id})]
    # Recorded, not yet run: the runner does that.
    assert TaskQueue.objects.filter(status="failed").count() == 2


def test_failure_groups_json_pages_by_keyset_and_lists_a_group_s_tasks(staff_client, alice, default_queue, monkeypatch):
    from tasks import console

    monkeypatch.setattr(console, "GROUPS_PAGE", 2)
    monkeypatch.setattr(console, "GROUP_TASKS_PAGE", 2)
    for n in range(3):
        fail_for_good(alice, n + 1, error=f"Error: {['alpha', 'beta', 'gamma'][n]} broke")
    first = staff_client.get(FAILURES_DATA).json()
    assert len(first["groups"]) == 2 and first["next"]
    second = staff_client.get(FAILURES_DATA, {"after": first["next"]}).json()
    assert len(second["groups"]) == 1 and second["next"] is None
    keys = [g["key"] for g in first["groups"] + second["groups"]]
    assert sorted(keys) == sorted(FailureGroup.objects.values_list("key", flat=True))
    biggest = next(g for g in first["groups"] + second["groups"] if g["count"] == 3)
    assert biggest["fingerprint"] == "Error: gamma broke"
    page = staff_client.get(biggest["tasks_url"]).json()
    assert len(page["tasks"]) == 2 and page["next"]
    rest = staff_client.get(biggest["tasks_url"], {"after": page["next"]}).json()
    assert len(rest["tasks"]) == 1 and rest["next"] is None


def test_the_console_reads_are_bounded_in_queries(staff_client, alice, default_queue):
    fail_for_good(alice, 30, error="E: user {i}")
    with CaptureQueriesContext(connection) as queries:
        assert staff_client.get(FAILURES_DATA).status_code == 200
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "task_queue" not in sql, "groups are read from their own table"
    assert "COUNT(" not in sql.upper()


def test_the_pages_render_in_chinese(staff_client, default_queue):
    response = staff_client.get(FAILURES, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 200
    assert "失败分组" in response.content.decode()
    response = staff_client.get(BULK, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "批量操作" in response.content.decode()
