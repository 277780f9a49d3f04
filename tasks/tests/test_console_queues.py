"""The console's queues panel and charts: staff only, bad range a 400, figures from the rollup and the live index."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import console_selectors, counters, hour_stats
from tasks.histograms import bucket_of
from tasks.models import QueueConfig, TaskQueue, TaskStatus, WorkerProcess
from tasks.tests.conftest import enqueue_many
from tasks.tests.factories import finished_fields, make_task
from tasks.tests.test_selectors import explain

pytestmark = pytest.mark.django_db

QUEUES = "/admin/taskhub/console/queues/"
QUEUES_DATA = "/admin/taskhub/console/queues/data/"
CHARTS = "/admin/taskhub/console/charts/"
CHARTS_DATA = "/admin/taskhub/console/charts/data/"


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def finished(owner, status: str, *, ago: timedelta, wait: float = 1.0, run: float = 2.0, queue=None) -> TaskQueue:
    """A task that finished `ago` (counted by the counters as the state machine would)."""
    end = timezone.now() - ago
    fields = finished_fields(status, created=end - timedelta(seconds=wait + run), wait=wait, run=run)
    with transaction.atomic():
        task = make_task(owner, queue=queue, **fields)
        counters.record_finished([task])
    return task


@pytest.mark.parametrize("path", [QUEUES, QUEUES_DATA, CHARTS, CHARTS_DATA])
def test_anyone_but_staff_gets_403(client, alice, default_queue, path):
    for user in (None, alice):
        if user:
            client.force_login(user)
        response = client.get(path)
        assert response.status_code == 403
        assert response.json()["code"] == "staff_only"


@pytest.mark.parametrize("path", [CHARTS, CHARTS_DATA])
@pytest.mark.parametrize("value", ["2h", "all", "1H", "7d;"])
def test_a_bad_range_is_a_400_naming_the_field(staff_client, default_queue, path, value):
    response = staff_client.get(path, {"range": value})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_range"
    assert response.json()["field"] == "range"


def test_an_unknown_queue_is_a_400_naming_the_field(staff_client, default_queue):
    response = staff_client.get(CHARTS_DATA, {"range": "1h", "queue": "nope"})
    assert (response.status_code, response.json()["code"], response.json()["field"]) == (400, "unknown_queue", "queue")


def test_the_queues_feed_shows_live_depth_last_hour_and_limits(staff_client, alice, default_queue, emails_queue):
    QueueConfig.objects.filter(pk=emails_queue.pk).update(
        max_concurrency=3, fairness="owner", rate_limit="10/m", rate_limit_per_key=True, per_key_concurrency=2
    )
    enqueue_many(alice, 4)
    enqueue_many(alice, 2, run_at=timezone.now() + timedelta(hours=1))
    running = enqueue_many(alice, 1)[0]
    TaskQueue.objects.filter(pk=running.pk).update(status=TaskStatus.RUNNING, started_at=timezone.now())
    now = timezone.now()
    WorkerProcess.objects.create(
        worker_id="w1", hostname="h", pid=1, queues=["default"], started_at=now, last_heartbeat_at=now
    )
    for _ in range(3):
        finished(alice, TaskStatus.SUCCEEDED, ago=timedelta(minutes=5))
    finished(alice, TaskStatus.FAILED, ago=timedelta(minutes=2))
    finished(alice, TaskStatus.FAILED, ago=timedelta(minutes=90))  # outside the hour

    data = staff_client.get(QUEUES_DATA).json()
    default = next(q for q in data["queues"] if q["name"] == "default")
    assert (default["pending"], default["scheduled"], default["running"], default["live_workers"]) == (4, 2, 1, 1)
    assert default["oldest_runnable_age_seconds"] >= 0
    assert (default["succeeded_last_hour"], default["failed_last_hour"]) == (3, 1)
    assert default["failure_rate_last_hour"] == pytest.approx(0.25)
    assert len(default["finished_per_minute"]) == 60 and sum(default["finished_per_minute"]) == 4
    assert default["finished_per_minute"][-6] == 3 and default["failed_per_minute"][-3] == 1
    assert default["pause_url"] == "/admin/taskhub/dashboard/queues/default/pause/"
    emails = next(q for q in data["queues"] if q["name"] == "emails")
    assert emails["limits"] == {
        "max_concurrency": 3,
        "max_active_per_user": None,
        "fairness": "owner",
        "rate_limit": "10/m",
        "rate_limit_per_key": True,
        "per_key_concurrency": 2,
    }
    assert emails["failure_rate_last_hour"] is None and sum(emails["finished_per_minute"]) == 0


@pytest.mark.parametrize(("path", "panel", "words"), [(QUEUES, "queues", "最久可运行"), (CHARTS, "charts", "等待时间")])
def test_the_pages_render_in_chinese(staff_client, default_queue, path, panel, words):
    response = staff_client.get(path, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 200
    body = response.content.decode()
    assert words in body and f'data-panel="{panel}"' in body


def test_the_chart_sums_minutes_per_minute_or_per_hour(staff_client, alice, default_queue, emails_queue):
    finished(alice, TaskStatus.SUCCEEDED, ago=timedelta(minutes=3), wait=0.5, run=10)
    finished(alice, TaskStatus.FAILED, ago=timedelta(minutes=3), wait=0.5, run=10, queue=emails_queue)
    finished(alice, TaskStatus.SUCCEEDED, ago=timedelta(hours=3), wait=50, run=1)
    finished(alice, TaskStatus.SUCCEEDED, ago=timedelta(days=3), wait=50, run=1)

    hour = staff_client.get(CHARTS_DATA, {"range": "1h"}).json()
    assert (len(hour["points"]), hour["step_seconds"]) == (60, 60)
    assert hour["totals"] == {"started": 2, "succeeded": 1, "failed": 1, "cancelled": 0}
    # Two waits of 0.5 s in the bucket (0.2, 0.5]: interpolated, the median is its middle.
    assert hour["wait"]["p50"] == pytest.approx(0.35) and hour["run"]["p99"] == pytest.approx(9.95)
    one_queue = staff_client.get(CHARTS_DATA, {"range": "1h", "queue": "emails"}).json()
    assert one_queue["totals"]["failed"] == 1 and one_queue["totals"]["succeeded"] == 0

    day = staff_client.get(CHARTS_DATA, {"range": "24h"}).json()
    assert (len(day["points"]), day["step_seconds"]) == (24, 3600)
    assert day["totals"]["succeeded"] == 2
    assert [p["succeeded"] for p in day["points"] if p["succeeded"]] == [1, 1]
    assert bucket_of(day["wait"]["p99"]) == bucket_of(50.0)
    week = staff_client.get(CHARTS_DATA, {"range": "7d"}).json()
    assert len(week["points"]) == 168 and week["totals"]["succeeded"] == 3
    assert staff_client.get(CHARTS, {"range": "7d"}).status_code == 200


def test_chart_percentiles_come_from_the_histogram_buckets(alice, default_queue):
    for wait in (0.3, 0.3, 0.3, 30.0):
        finished(alice, TaskStatus.SUCCEEDED, ago=timedelta(minutes=1), wait=wait, run=0.004)
    chart = console_selectors.chart(range_name="1h")
    assert chart.wait["p50"] is not None and bucket_of(chart.wait["p50"]) == bucket_of(0.3)
    assert bucket_of(chart.wait["p99"]) == bucket_of(30.0)
    assert chart.run == {"p50": pytest.approx(0.005), "p95": pytest.approx(0.0095), "p99": pytest.approx(0.0099)}


def test_the_queues_feed_and_charts_read_task_queue_only_for_live_tasks(alice, default_queue):
    for _ in range(5):
        finished(alice, TaskStatus.SUCCEEDED, ago=timedelta(minutes=1))
    with CaptureQueriesContext(connection) as captured:
        console_selectors.queues_overview()
        for range_name in console_selectors.CHART_RANGES:
            console_selectors.chart(range_name=range_name)
    for query in captured.captured_queries:
        sql = query["sql"]
        if "task_queue" in sql:
            assert "'pending'" in sql or "'running'" in sql, sql
    chart_queries = [q["sql"] for q in captured.captured_queries if "task_minute_stats" in q["sql"]]
    assert len(chart_queries) == 4  # the panel's hour, then one per range


# --- On MariaDB: the plans ----------------------------------------------------------------------

HISTORY = 4000


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_panel_and_chart_queries_read_the_rollup_and_live_indexes_not_task_history(alice, default_queue):
    now = timezone.now()
    history = []
    for index in range(HISTORY):
        end = now - timedelta(minutes=index * 3)  # 8 days and a bit: the rebuild keeps 8
        history.append(
            TaskQueue(
                owner=alice,
                queue=default_queue,
                task_type="echo",
                status=TaskStatus.SUCCEEDED,
                created_at=end - timedelta(seconds=3),
                started_at=end - timedelta(seconds=2),
                finished_at=end,
            )
        )
    TaskQueue.objects.bulk_create(history, batch_size=1000)
    counters.rebuild()
    hour_stats.rebuild()
    enqueue_many(alice, 20)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE task_queue, task_minute_stats, task_hour_stats")
        cursor.fetchall()
        cursor.execute("SELECT COUNT(*) FROM task_minute_stats")
        rollup_rows = cursor.fetchone()[0]
    assert hour_stats.rolled_up_to() is not None  # the rebuild rolled the hours up
    # The minutes after the mark: at most an hour and the roll-up's grace of them (a row every 3 minutes).
    tail_rows = (60 + hour_stats.HOUR_ROLL_UP_GRACE.total_seconds() // 60) // 3 + 2

    with CaptureQueriesContext(connection) as captured:
        console_selectors.queues_overview()
        console_selectors.chart(range_name="1h")
        console_selectors.chart(range_name="1h", queue_name="default")
    with CaptureQueriesContext(connection) as hourly:
        for range_name in ("24h", "7d"):
            console_selectors.chart(range_name=range_name)
            console_selectors.chart(range_name=range_name, queue_name="default")
    rollup_reads = 0
    for query in captured.captured_queries:
        for row in explain(query["sql"]):
            if row["table"] == "task_queue":
                assert row["type"] != "ALL" and row["key"], f"full scan:\n{query['sql']}\n{row}"
                assert int(row["rows"]) < HISTORY // 10, f"reads task history:\n{query['sql']}\n{row}"
            if row["table"] == "task_minute_stats":
                rollup_reads += 1
                # A range of minutes, or one queue's rows of the (retention-bounded) rollup: MariaDB
                # may read `queue_id = ?` by ref and filter the minutes inside the index.
                assert (row["type"], row["key"]) in (
                    ("range", "task_minute_stats_minute_idx"),
                    ("range", "task_minute_stats_uniq"),
                    ("ref", "task_minute_stats_uniq"),
                ), f"{query['sql']}\n{row}"
                assert int(row["rows"]) <= rollup_rows * 1.2, f"{query['sql']}\n{row}"
    assert rollup_reads == 3
    minute_reads = hour_reads = 0
    for query in hourly.captured_queries:
        for row in explain(query["sql"]):
            assert row["table"] != "task_queue", query["sql"]
            if row["table"] == "task_hour_stats":
                hour_reads += 1
                assert (row["type"], row["key"]) in (
                    ("range", "task_hour_stats_hour_idx"),
                    ("range", "task_hour_stats_uniq"),
                    ("ref", "task_hour_stats_uniq"),
                ), f"{query['sql']}\n{row}"
                assert int(row["rows"]) <= 8 * 24 * 1.2, f"{query['sql']}\n{row}"
            if row["table"] == "task_minute_stats":
                minute_reads += 1
                # Only the tail after the mark, by a range; one queue's may be read by ref (MariaDB's
                # choice for a table this small), bounded by the rollup as above.
                assert (row["type"], row["key"]) in (
                    ("range", "task_minute_stats_minute_idx"),
                    ("range", "task_minute_stats_uniq"),
                    ("ref", "task_minute_stats_uniq"),
                ), f"{query['sql']}\n{row}"
                if row["type"] == "range":
                    assert int(row["rows"]) <= tail_rows, f"{query['sql']}\n{row}"
                else:
                    assert "`queue_id` =" in query["sql"] and int(row["rows"]) <= rollup_rows * 1.2, query["sql"]
    assert hour_reads == minute_reads == 4
