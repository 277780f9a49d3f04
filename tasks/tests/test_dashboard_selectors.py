"""The dashboard's reads: hourly throughput, failing task types (bounded), live workers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import counters, dashboard_selectors, services
from tasks.counters import hour_of
from tasks.models import QueueConfig, TaskQueue, TaskStatus, WorkerProcess
from tasks.specs import TaskSpec
from tasks.tests.factories import make_task
from tasks.tests.test_selectors import explain

pytestmark = pytest.mark.django_db


def fail(owner, task_type: str, error: str, *, created_ago: timedelta = timedelta(minutes=5), queue=None):
    now = timezone.now()
    return make_task(
        owner,
        queue=queue,
        task_type=task_type,
        status=TaskStatus.FAILED,
        error=error,
        created_at=now - created_ago,
        finished_at=now - created_ago + timedelta(seconds=1),
    )


def test_hourly_throughput_gives_every_hour_of_the_day_summed_over_owners_and_queues(alice, bob, default_queue):
    other = QueueConfig.objects.create(name="other")
    services.tasks_enqueue_bulk(user=alice, specs=[TaskSpec("echo")] * 3)
    services.tasks_enqueue_bulk(user=bob, specs=[TaskSpec("echo", queue="other")] * 2)
    for task in TaskQueue.objects.filter(owner=bob):
        services.task_cancel(task=task)

    series = dashboard_selectors.hourly_throughput()

    assert len(series) == 24
    assert [h.hour for h in series] == [hour_of(timezone.now()) - timedelta(hours=23 - i) for i in range(24)]
    assert (series[-1].created, series[-1].cancelled, series[-1].succeeded) == (5, 2, 0)
    assert all((h.created, h.failed) == (0, 0) for h in series[:-1])
    assert other.pk  # both queues counted in the same bar


def test_top_failing_types_are_ordered_by_failures_and_carry_the_newest_error(alice, bob, default_queue):
    fail(alice, "echo", "old echo error", created_ago=timedelta(hours=2))
    fail(bob, "echo", "newest echo error", created_ago=timedelta(hours=1))
    fail(alice, "sleep", "sleep error")
    make_task(alice, task_type="fail", status=TaskStatus.SUCCEEDED)

    summary = dashboard_selectors.top_failing_types()

    assert [(t.task_type, t.failed, t.last_error) for t in summary.types] == [
        ("echo", 2, "newest echo error"),
        ("sleep", 1, "sleep error"),
    ]
    assert summary.truncated is False


def test_top_failing_types_leave_out_tasks_created_before_the_window(alice, default_queue):
    fail(alice, "echo", "yesterday's news", created_ago=timedelta(hours=25))
    assert dashboard_selectors.top_failing_types().types == []


def test_top_failing_types_read_only_the_newest_tasks_of_a_busy_window(alice, default_queue, monkeypatch):
    monkeypatch.setattr(dashboard_selectors, "FAILURE_SCAN_LIMIT", 3)
    fail(alice, "echo", "older", created_ago=timedelta(minutes=50))
    for minutes in (40, 30, 20, 10):
        fail(alice, "sleep", "newer", created_ago=timedelta(minutes=minutes))

    summary = dashboard_selectors.top_failing_types()

    assert [(t.task_type, t.failed) for t in summary.types] == [("sleep", 3)]
    assert summary.truncated is True


def test_last_error_is_cut_to_a_bounded_length(alice, default_queue):
    fail(alice, "echo", "x" * 5000)
    (failing,) = dashboard_selectors.top_failing_types().types
    assert len(failing.last_error) == dashboard_selectors.LAST_ERROR_MAX_CHARS


def test_live_workers_leave_out_workers_whose_heartbeat_is_stale(settings):
    now = timezone.now()
    WorkerProcess.objects.create(worker_id="fresh", hostname="a", pid=1, queues=["default"], last_heartbeat_at=now)
    stale = now - timedelta(seconds=settings.TASKHUB_WORKER_STALE_SECONDS + 1)
    WorkerProcess.objects.create(worker_id="stale", hostname="b", pid=2, last_heartbeat_at=stale)

    workers = dashboard_selectors.live_workers(now=now)

    assert [(w.worker_id, w.queues) for w in workers] == [("fresh", ["default"])]


def test_snapshot_costs_a_fixed_number_of_queries(alice, default_queue, django_assert_num_queries):
    services.tasks_enqueue_bulk(user=alice, specs=[TaskSpec("echo")] * 20)
    for i in range(10):
        fail(alice, f"type{i}", "boom")
    # queues (3), workers, throughput (counters, live creations), failure boundary, failure counts, their errors
    with django_assert_num_queries(9):
        snapshot = dashboard_selectors.dashboard_snapshot()
    assert snapshot.queues[0].pending == 20
    assert len(snapshot.failures.types) == dashboard_selectors.TOP_FAILING_TYPES


OLD_FAILED = 6000


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_failure_summary_reads_the_window_through_an_index_not_every_failed_task(alice, default_queue):
    """Years of failed tasks must not make the dashboard's failure summary slower."""
    long_ago = timezone.now() - timedelta(days=30)
    TaskQueue.objects.bulk_create(
        [
            TaskQueue(
                owner=alice,
                queue=default_queue,
                task_type="echo",
                status=TaskStatus.FAILED,
                created_at=long_ago,
                finished_at=long_ago,
            )
            for _ in range(OLD_FAILED)
        ],
        batch_size=1000,
    )
    counters.rebuild()
    for _ in range(5):
        fail(alice, "sleep", "recent")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE task_queue")
        cursor.fetchall()

    with CaptureQueriesContext(connection) as captured:
        summary = dashboard_selectors.top_failing_types()

    assert [(t.task_type, t.failed) for t in summary.types] == [("sleep", 5)]
    for query in captured.captured_queries:
        for row in explain(query["sql"]):
            if row["table"] == "task_queue":
                assert row["type"] != "ALL" and row["key"], f"full scan:\n{query['sql']}\n{row}"
                assert int(row["rows"]) < OLD_FAILED // 10, f"reads old failures:\n{query['sql']}\n{row}"
