"""The admin's task list at scale: bounded count, no DISTINCT, one-column search, id-only sort, reads bounded in time."""

from __future__ import annotations

import re

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.db import session_state, statement_time
from tasks import admin_list
from tasks.tests.factories import make_task

pytestmark = pytest.mark.django_db
LIST = "admin:tasks_taskqueue_changelist"
# Billions of joined rows: seconds at least on any server, so only the bound ends it.
HEAVY_READ = (
    "SELECT COUNT(*) FROM information_schema.COLUMNS a, information_schema.COLUMNS b, information_schema.COLUMNS c"
)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def _task_links(body: str) -> set[int]:
    return {int(pk) for pk in re.findall(r"/admin/tasks/taskqueue/(\d+)/change/", body)}


def test_a_list_page_counts_a_bounded_number_of_rows_and_builds_no_filter_by_distinct(
    staff_client, alice, default_queue
):
    for _ in range(3):
        make_task(alice)
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(reverse(LIST), {"status__exact": "pending"})
    assert response.status_code == 200
    sql = [q["sql"].upper() for q in queries.captured_queries if "TASK_QUEUE" in q["sql"].upper()]
    counts = [s for s in sql if "COUNT(" in s]
    assert counts, "the list counts its rows"
    # Every count of task_queue reads a LIMITed subquery, never the whole (filtered) table.
    assert all(f"LIMIT {admin_list.COUNT_CAP + 1}" in s for s in counts), counts
    assert not any("DISTINCT" in s for s in sql), sql


def test_past_the_cap_the_page_says_more_than_and_stops_paging(staff_client, alice, default_queue, monkeypatch):
    monkeypatch.setattr(admin_list, "COUNT_CAP", 4)
    tasks = [make_task(alice) for _ in range(7)]
    body = staff_client.get(reverse(LIST)).content.decode()
    assert "more than 4 tasks" in body
    assert "7 tasks" not in body
    assert max(t.pk for t in tasks) in _task_links(body)  # newest first


def test_under_the_cap_the_page_gives_the_exact_count(staff_client, alice, default_queue):
    make_task(alice)
    make_task(alice)
    body = staff_client.get(reverse(LIST)).content.decode()
    assert "2 tasks" in body and "more than" not in body


def test_task_types_are_offered_from_the_registry_and_any_type_filters(staff_client, alice, default_queue):
    echo, sleep = make_task(alice, task_type="echo"), make_task(alice, task_type="sleep")
    body = staff_client.get(reverse(LIST)).content.decode()
    assert "?task_type=echo" in body and "?task_type=sleep" in body  # the registry's types
    listed = _task_links(staff_client.get(reverse(LIST), {"task_type": "sleep"}).content.decode())
    assert listed == {sleep.pk} and echo.pk not in listed


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("{pk}", "mine"),
        ("owner:bob", "bobs"),
        ("type:sleep", "bobs"),
        ("key:k-1", "mine"),
        ("x:1", None),
        ("bob", None),
    ],
)
def test_search_reads_one_column_by_id_or_prefix(staff_client, alice, bob, default_queue, term, expected):
    mine = make_task(alice, task_type="echo", idempotency_key="k-1")
    bobs = make_task(bob, task_type="sleep")
    listed = _task_links(staff_client.get(reverse(LIST), {"q": term.format(pk=mine.pk)}).content.decode())
    assert listed == ({mine.pk} if expected == "mine" else {bobs.pk} if expected == "bobs" else set())


def test_only_the_id_sorts_the_list(staff_client, alice, default_queue):
    make_task(alice)
    with CaptureQueriesContext(connection) as queries:
        staff_client.get(reverse(LIST), {"o": "2"})  # the second column (task type): not sortable
    selects = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"] and "task_queue" in q["sql"]]
    assert selects and all(re.search(r'ORDER BY [`"]task_queue[`"]\.[`"]id[`"] DESC', s) for s in selects), selects


def test_a_list_stopped_by_its_time_bound_says_what_to_narrow(staff_client, alice, default_queue, monkeypatch):
    make_task(alice)

    def too_slow(self, request, queryset, term):
        if term:  # the unfiltered list it redirects to reads in time
            raise OperationalError(1969, "Query execution was interrupted (max_statement_time exceeded)")
        return queryset, False

    monkeypatch.setattr("tasks.admin.TaskQueueAdmin.get_search_results", too_slow)
    response = staff_client.get(reverse(LIST), {"q": "type:echo"}, follow=True)
    assert response.redirect_chain == [(reverse(LIST), 302)]
    assert "was stopped" in response.content.decode()


def test_other_database_errors_are_not_taken_for_the_time_bound(staff_client, alice, default_queue, monkeypatch):
    def gone(self, request, queryset, term):
        raise OperationalError(2013, "Lost connection to server during query")

    monkeypatch.setattr("tasks.admin.TaskQueueAdmin.get_search_results", gone)
    assert staff_client.get(reverse(LIST), {"q": "type:echo"}).status_code == 503


@pytest.mark.mysql
def test_on_mysql_the_bound_stops_a_long_read_and_puts_the_session_back(alice, default_queue):
    variable = "max_statement_time" if connection.mysql_is_mariadb else "max_execution_time"

    def current():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT @@SESSION.{variable}")
            return cursor.fetchone()[0]

    before = current()
    with pytest.raises(OperationalError) as stopped, statement_time.bounded_statement_time(0.2):
        assert float(current()) in (0.2, 200)
        with connection.cursor() as cursor:  # seconds of CPU in one statement
            cursor.execute(HEAVY_READ)
    assert statement_time.is_statement_timeout(stopped.value)
    assert current() == before
    # Set and put back by the bound itself: not session state left to the next request.
    assert session_state.session_changes(connection.connection) == set()
