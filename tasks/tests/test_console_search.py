"""The console's task search: the bulk actions' filter, keyset pages on an index, refusals with a code."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tasks import bulk, console_search
from tasks.models import TaskQueue, TaskStatus
from tasks.tests.conftest import enqueue_many, explain, fail_for_good

TASKS = "/admin/taskhub/console/tasks/"
TASKS_DATA = "/admin/taskhub/console/tasks/data/"


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("path", [TASKS, TASKS_DATA])
def test_anyone_but_staff_gets_403(client, alice, default_queue, path):
    enqueue_many(alice, 1)
    for user in (None, alice):
        if user:
            client.force_login(user)
        response = client.get(path, {"owner": "alice"})
        assert response.status_code == 403
        assert response.json()["code"] == "staff_only"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ({"status": "failed"}, "filter_not_indexed", None),
        ({"task_type": "echo", "queue": "default"}, "filter_not_indexed", None),
        ({"owner": "alice", "colour": "red"}, "unknown_filter", "colour"),
        ({"status": "bogus", "owner": "alice"}, "invalid_filter", "status"),
        ({"owner": "nobody"}, "unknown_owner", "owner"),
        ({"owner": "alice", "queue": "nope"}, "unknown_queue", "queue"),
        ({"owner": "alice", "created_after": "yesterday"}, "invalid_filter", "created_after"),
        ({"failure_group": "f" * 40}, "unknown_failure_group", "failure_group"),
        ({"owner": "alice", "before": "abc"}, "invalid_cursor", "before"),
        ({"owner": "alice", "before": "0"}, "invalid_cursor", "before"),
    ],
)
def test_bad_filters_are_refused_with_a_code_naming_the_field(staff_client, alice, default_queue, query, code, field):
    response = staff_client.get(TASKS_DATA, query)
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    page = staff_client.get(TASKS, query)  # the page shows the refusal, with the form
    assert page.status_code == 200
    assert page.context["initial"]["error"]["code"] == code


@pytest.mark.django_db
def test_an_owner_search_pages_newest_first_by_keyset(staff_client, alice, bob, default_queue):
    mine = enqueue_many(alice, 120)
    enqueue_many(bob, 10)
    seen, before = [], ""
    with CaptureQueriesContext(connection) as captured:
        while True:
            data = staff_client.get(TASKS_DATA, {"owner": "alice", "before": before}).json()
            seen += [task["id"] for task in data["tasks"]]
            if data["next"] is None:
                break
            before = str(data["next"])
    assert seen == sorted((task.pk for task in mine), reverse=True)
    sql = " ".join(q["sql"].upper() for q in captured.captured_queries)
    assert "COUNT(" not in sql and "OFFSET" not in sql and "DISTINCT" not in sql


@pytest.mark.django_db
def test_the_narrowing_fields_filter_the_anchors_tasks(staff_client, alice, default_queue, emails_queue):
    in_default = enqueue_many(alice, 3, task_type="echo")
    enqueue_many(alice, 2, task_type="sleep")
    enqueue_many(alice, 2, task_type="echo", queue=emails_queue)
    data = staff_client.get(TASKS_DATA, {"status": "pending", "queue": "default", "task_type": "echo"}).json()
    assert [t["id"] for t in data["tasks"]] == sorted((t.pk for t in in_default), reverse=True)
    assert {t["queue"] for t in data["tasks"]} == {"default"}
    assert data["bulk_url"] == "/admin/taskhub/console/bulk/?queue=default&status=pending&task_type=echo"


@pytest.mark.django_db
def test_a_failure_group_search_lists_its_tasks(staff_client, alice, default_queue):
    failed = fail_for_good(alice, 3, error="KeyError: 'x'")
    fail_for_good(alice, 2, error="DiskFull: nope", exception="app.DiskFull")
    data = staff_client.get(TASKS_DATA, {"failure_group": failed[0].failure_group_id}).json()
    assert [t["id"] for t in data["tasks"]] == sorted((t.pk for t in failed), reverse=True)
    assert {t["status"] for t in data["tasks"]} == {TaskStatus.FAILED}


@pytest.mark.django_db
def test_an_anchor_that_is_the_whole_filter_reads_one_page_of_ids(alice, default_queue, monkeypatch):
    failed = fail_for_good(alice, 4, error="KeyError: 'x'")
    asked: list[int] = []
    anchor_ids_before = bulk.anchor_ids_before
    monkeypatch.setattr(console_search, "PAGE_SIZE", 2)
    monkeypatch.setattr(
        bulk, "anchor_ids_before", lambda f, b, limit: asked.append(limit) or anchor_ids_before(f, b, limit)
    )
    page = console_search.search({"failure_group": failed[0].failure_group_id})
    assert [t["id"] for t in page["tasks"]] == [failed[3].pk, failed[2].pk]
    assert asked == [3]  # a page and one more: every id of the anchor matches
    console_search.search({"failure_group": failed[0].failure_group_id, "queue": "default"})
    assert asked[-1] == console_search.SCAN_LIMIT  # a narrowing field: ids may not match


@pytest.mark.django_db
@pytest.mark.parametrize(
    "filters", [{"owner": "alice"}, {"owner": "alice", "task_type": "echo"}, {"status": "pending"}]
)
def test_task_rows_are_read_from_task_queue_alone_and_the_names_apart(alice, default_queue, filters):
    enqueue_many(alice, 3)
    with CaptureQueriesContext(connection) as queries:
        page = console_search.search(filters)
    assert {(t["queue"], t["owner"]) for t in page["tasks"]} == {("default", "alice")}
    reads = [q["sql"] for q in queries.captured_queries if "task_queue" in q["sql"]]
    assert reads and not [sql for sql in reads if "JOIN" in sql.upper()]


@pytest.mark.django_db
def test_a_sparse_match_is_bounded_per_request_and_said_so(staff_client, alice, default_queue, monkeypatch):
    monkeypatch.setattr(console_search, "SCAN_LIMIT", 20)
    oldest = enqueue_many(alice, 1, task_type="rare")[0]
    enqueue_many(alice, 30, task_type="echo")
    first = staff_client.get(TASKS_DATA, {"owner": "alice", "task_type": "rare"}).json()
    assert (first["tasks"], first["scanned"], first["partial"]) == ([], 20, True)
    assert "20" in first["note"]
    second = staff_client.get(TASKS_DATA, {"owner": "alice", "task_type": "rare", "before": first["next"]}).json()
    assert [t["id"] for t in second["tasks"]] == [oldest.pk]
    assert (second["next"], second["partial"]) == (None, False)


@pytest.mark.django_db
def test_the_search_page_renders_the_first_page_and_the_bulk_form_takes_the_filter(staff_client, alice, default_queue):
    task = enqueue_many(alice, 1)[0]
    page = staff_client.get(TASKS, {"owner": "alice"})
    assert page.status_code == 200
    assert [t["id"] for t in page.context["initial"]["tasks"]] == [task.pk]
    assert 'value="alice"' in page.content.decode()
    assert "console_panels.js" in staff_client.get("/admin/taskhub/console/bulk/?owner=alice").content.decode()


# --- On MariaDB: the anchor reads are index reads ---------------------------------------------------


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_each_anchor_is_read_through_its_index_newest_first(alice, bob, default_queue):
    failed = fail_for_good(alice, 5, error="KeyError: 'x'")
    history = [
        TaskQueue(owner=user, queue=default_queue, task_type="echo", status=TaskStatus.SUCCEEDED)
        for user in (alice, bob)
        for _ in range(3000)
    ]
    TaskQueue.objects.bulk_create(history, batch_size=1000)
    enqueue_many(bob, 20)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE task_queue")
        cursor.fetchall()

    cases = {
        "task_failure_group_idx": {"failure_group": failed[0].failure_group_id},
        "task_owner_id_idx": {"owner": "alice"},
        "task_owner_status_idx": {"owner": "alice", "status": "failed"},
        "task_claim_idx": {"status": "pending"},
    }
    for index, filters in cases.items():
        with CaptureQueriesContext(connection) as captured:
            bulk.anchor_ids_before(bulk.validate_filters(filters), 10**9, console_search.SCAN_LIMIT)
        sql = captured.captured_queries[-1]["sql"]
        assert "LIMIT" in sql, sql
        plan = explain(sql, None)
        assert [line["key"] for line in plan] == [index], (filters, str(plan))
        assert plan[0]["type"] != "ALL", plan
        if index != "task_claim_idx":  # the live set is sorted by id (O(live set), as the bulk runner's)
            assert "filesort" not in (plan[0]["extra"] or ""), plan
        else:
            assert int(plan[0]["rows"]) < 1000, plan
