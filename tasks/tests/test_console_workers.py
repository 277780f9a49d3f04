"""The console's Workers and Stuck panels: staff only, the drain request end to end, bounded index reads."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import console_workers
from tasks.models import (
    BulkAction,
    BulkActionKind,
    BulkActionState,
    OwnerQueueSettings,
    QueueConfig,
    TaskHourlyStats,
    TaskQueue,
    TaskStatus,
    WorkerProcess,
)
from tasks.tests.conftest import enqueue_many, explain, fail_for_good, wait_for
from tasks.worker import row

WORKERS = "/admin/taskhub/console/workers/"
WORKERS_DATA = "/admin/taskhub/console/workers/data/"
STUCK = "/admin/taskhub/console/stuck/"
STUCK_DATA = "/admin/taskhub/console/stuck/data/"


def drain_url(worker: WorkerProcess) -> str:
    return f"/admin/taskhub/console/workers/{worker.pk}/drain/"


def make_worker(name: str = "host-a:100:abc", **fields) -> WorkerProcess:
    host, pid, _ = name.rsplit(":", 2)
    return WorkerProcess.objects.create(worker_id=name, hostname=host, pid=int(pid), **fields)


def run(task: TaskQueue, worker: WorkerProcess, *, lease_seconds: float) -> None:
    """Put a task in the running state as a claim leaves it (test setup, not a transition under test)."""
    now = timezone.now()
    TaskQueue.objects.filter(pk=task.pk).update(
        status=TaskStatus.RUNNING,
        claimed_by=worker.worker_id,
        started_at=now,
        attempts=1,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
    )


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


# --- Who may ---------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [("get", WORKERS), ("get", WORKERS_DATA), ("get", STUCK), ("get", STUCK_DATA), ("post", "drain")],
)
def test_anyone_but_staff_gets_403_and_no_worker_is_drained(client, alice, method, path):
    worker = make_worker()
    path = drain_url(worker) if path == "drain" else path
    for user in (None, alice):
        if user:
            client.force_login(user)
        response = getattr(client, method)(path)
        assert response.status_code == 403
        assert response.json()["code"] == "staff_only"
    assert WorkerProcess.objects.get().drain_requested_at is None
    assert not BulkAction.objects.exists()


@pytest.mark.django_db
def test_a_drain_without_the_csrf_token_is_refused(staff):
    worker = make_worker()
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.post(drain_url(worker)).status_code == 403
    assert WorkerProcess.objects.get().drain_requested_at is None
    token = client.get(WORKERS).cookies["csrftoken"].value
    assert client.post(drain_url(worker), HTTP_X_CSRFTOKEN=token).status_code == 202
    assert WorkerProcess.objects.get().drain_requested_at is not None


@pytest.mark.django_db
def test_staff_without_the_change_worker_permission_gets_403(django_user_model):
    worker = make_worker()
    clerk = django_user_model.objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    client = Client()
    client.force_login(clerk)
    assert client.get(WORKERS_DATA).status_code == 200  # reading is for all staff
    response = client.post(drain_url(worker))
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    assert WorkerProcess.objects.get().drain_requested_at is None

    clerk.user_permissions.add(Permission.objects.get(codename="change_workerprocess"))
    client.force_login(django_user_model.objects.get(pk=clerk.pk))
    assert client.post(drain_url(worker)).status_code == 202


@pytest.mark.django_db
def test_only_post_drains(staff_client):
    worker = make_worker()
    assert staff_client.get(drain_url(worker)).status_code == 405
    assert WorkerProcess.objects.get().drain_requested_at is None


# --- The drain request -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_drain_flags_the_row_once_and_is_recorded_in_the_audit_list(staff_client, staff):
    worker = make_worker()
    response = staff_client.post(drain_url(worker))
    assert response.status_code == 202
    assert response.json()["requested"] is True
    assert WorkerProcess.objects.get().drain_requested_at is not None
    audit = BulkAction.objects.get()
    assert (audit.action, audit.filters, audit.state, audit.created_by) == (
        BulkActionKind.DRAIN,
        {"worker": worker.worker_id},
        BulkActionState.DONE,
        staff,
    )
    assert staff_client.get("/admin/taskhub/console/bulk/data/").json()["actions"][0]["action"] == "drain"

    again = staff_client.post(drain_url(worker))
    assert (again.status_code, again.json()["requested"]) == (202, False)
    assert BulkAction.objects.count() == 1


@pytest.mark.django_db
def test_draining_a_worker_that_is_gone_is_404_unknown_worker(staff_client):
    response = staff_client.post("/admin/taskhub/console/workers/999999/drain/")
    assert (response.status_code, response.json()["code"], response.json()["field"]) == (
        404,
        "unknown_worker",
        "worker",
    )
    assert not BulkAction.objects.exists()


@pytest.mark.django_db
def test_drain_is_not_a_bulk_action_by_filter(staff_client):
    response = staff_client.post("/admin/taskhub/console/bulk/", {"action": "drain", "status": "pending"})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_action")
    assert 'value="drain"' not in staff_client.get("/admin/taskhub/console/bulk/").content.decode()


# --- The heartbeat carries the drain and the memory -------------------------------------------------


def beat(worker_id: str, **kwargs) -> bool:
    return row.worker_heartbeat(worker_id=worker_id, queues=[], concurrency=1, tasks_processed=3, **kwargs)


@pytest.mark.django_db
def test_the_heartbeat_answers_whether_a_drain_was_requested(django_assert_num_queries):
    worker = make_worker()
    with django_assert_num_queries(1):
        assert beat(worker.worker_id, memory_rss_bytes=12345) is False
    stored = WorkerProcess.objects.get()
    assert (stored.tasks_processed, stored.memory_rss_bytes) == (3, 12345)

    WorkerProcess.objects.update(drain_requested_at=timezone.now(), last_heartbeat_at=timezone.now() - timedelta(9))
    assert beat(worker.worker_id) is True
    refreshed = WorkerProcess.objects.get()
    assert refreshed.last_heartbeat_at > timezone.now() - timedelta(minutes=1)  # the draining worker stays fresh
    with django_assert_num_queries(1):  # once it knows, one statement again
        assert beat(worker.worker_id, draining=True) is True


@pytest.mark.django_db
def test_a_pruned_row_is_re_created_by_the_heartbeat_and_a_drain_is_not_invented():
    assert beat("host-b:7:def") is False
    assert WorkerProcess.objects.get().worker_id == "host-b:7:def"
    WorkerProcess.objects.all().delete()
    assert beat("host-b:7:def", draining=True) is True  # still draining, row back
    assert WorkerProcess.objects.filter(worker_id="host-b:7:def").exists()


def test_resident_bytes_reads_this_process_and_skips_the_gone():
    mine = row.resident_bytes([os.getpid()])
    assert mine is not None and mine > 1_000_000
    assert row.resident_bytes([os.getpid(), 2**22 + 12345]) == pytest.approx(mine, rel=0.2)
    assert row.resident_bytes([2**22 + 12345]) is None


# --- Workers panel --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_workers_feed_shows_each_worker_with_what_it_holds_and_staleness(staff_client, alice, default_queue):
    busy = make_worker("host-a:100:abc", queues=["default"], concurrency=2, memory_rss_bytes=50 << 20)
    silent = make_worker("host-b:200:def", last_heartbeat_at=timezone.now() - timedelta(hours=1))
    tasks = enqueue_many(alice, 3, task_type="sleep")
    run(tasks[0], busy, lease_seconds=60)
    run(tasks[1], busy, lease_seconds=60)
    TaskQueue.objects.filter(pk=tasks[2].pk).update(claimed_by=busy.worker_id)  # pending: not held

    data = staff_client.get(WORKERS_DATA).json()
    by_id = {w["worker_id"]: w for w in data["workers"]}
    assert [w["worker_id"] for w in data["workers"]] == [busy.worker_id, silent.worker_id]
    assert by_id[busy.worker_id]["current"] == [
        {"id": tasks[0].pk, "task_type": "sleep"},
        {"id": tasks[1].pk, "task_type": "sleep"},
    ]
    assert by_id[busy.worker_id]["memory_rss_bytes"] == 50 << 20
    assert (by_id[busy.worker_id]["stale"], by_id[silent.worker_id]["stale"]) == (False, True)
    assert by_id[silent.worker_id]["current"] == []
    assert by_id[busy.worker_id]["queues"] == ["default"]
    page = staff_client.get(WORKERS)
    assert page.status_code == 200
    assert busy.worker_id in page.content.decode()


@pytest.mark.django_db
def test_the_workers_feed_reads_a_fixed_number_of_statements(staff_client, alice, default_queue):
    for i in range(5):
        worker = make_worker(f"host-{i}:{i + 1}:abc")
        run(enqueue_many(alice, 1)[0], worker, lease_seconds=60)
    with CaptureQueriesContext(connection) as captured:
        data = console_workers.workers_data()
    assert len(data["workers"]) == 5
    assert len(captured.captured_queries) == 2
    task_reads = [q["sql"] for q in captured.captured_queries if "task_queue" in q["sql"]]
    assert len(task_reads) == 1 and "LIMIT" in task_reads[0] and "status" in task_reads[0]


# --- Stuck panel ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_stuck_feed_lists_tasks_past_their_lease_and_silent_workers(staff_client, alice, default_queue):
    gone = make_worker("host-a:100:abc", last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    fresh = make_worker("host-b:200:def")
    late, fine = enqueue_many(alice, 2, task_type="sleep")
    run(late, gone, lease_seconds=-30)
    run(fine, fresh, lease_seconds=60)

    data = staff_client.get(STUCK_DATA).json()
    assert [t["id"] for t in data["past_lease"]] == [late.pk]
    assert data["past_lease"][0]["claimed_by"] == gone.worker_id
    assert data["past_lease"][0]["overdue_seconds"] >= 29
    assert [w["worker_id"] for w in data["silent_workers"]] == [gone.worker_id]
    assert staff_client.get(STUCK).status_code == 200


@pytest.mark.django_db
def test_the_stuck_lists_are_bounded(alice, default_queue):
    gone = make_worker(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    for task in enqueue_many(alice, console_workers.STUCK_LIMIT + 5):
        run(task, gone, lease_seconds=-10)
    assert len(console_workers.stuck_data()["past_lease"]) == console_workers.STUCK_LIMIT


def hourly(queue: QueueConfig, owner, *, hours_ago: int, started: int, mean_wait: float) -> None:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago)
    TaskHourlyStats.objects.create(
        owner=owner, queue=queue, hour=hour, started=started, wait_seconds_sum=started * mean_wait
    )


@pytest.mark.django_db
def test_a_queue_waiting_far_beyond_its_usual_wait_is_flagged(alice, default_queue, emails_queue):
    slow = QueueConfig.objects.create(name="slow")
    paused = QueueConfig.objects.create(name="paused", is_paused=True)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    # default: usually 2 s (median of 1, 2, 900), its oldest runnable task waited an hour: flagged.
    for hours_ago, mean in ((1, 1.0), (2, 2.0), (3, 900.0)):
        hourly(default_queue, alice, hours_ago=hours_ago, started=10, mean_wait=mean)
    enqueue_many(alice, 2, queue=default_queue, run_at=an_hour_ago)
    # slow: usually 10 minutes, an hour is within 10 x: not flagged.
    hourly(slow, alice, hours_ago=1, started=4, mean_wait=600.0)
    enqueue_many(alice, 1, queue=slow, run_at=an_hour_ago)
    # emails: no history; a task scheduled for later and a fresh one: under the floor, not flagged.
    enqueue_many(alice, 1, queue=emails_queue, run_at=timezone.now() + timedelta(days=1))
    enqueue_many(alice, 1, queue=emails_queue)
    # paused: left out whatever it waited.
    enqueue_many(alice, 1, queue=paused, run_at=an_hour_ago)

    waiting = console_workers.stuck_data()["waiting"]
    assert [q["queue"] for q in waiting] == ["default"]
    assert waiting[0]["usual_wait_seconds"] == 2.0
    assert waiting[0]["limit_seconds"] == console_workers.WAIT_FLOOR_SECONDS  # 10 x 2 s is under the floor
    assert waiting[0]["waited_seconds"] >= 3599

    # Without history a queue is flagged past the floor alone.
    enqueue_many(alice, 1, queue=emails_queue, run_at=an_hour_ago)
    assert [q["queue"] for q in console_workers.stuck_data()["waiting"]] == ["default", "emails"]


# --- On MariaDB: every read of task_queue goes through an index, bounded ----------------------------


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_the_panels_read_task_queue_through_indexes_without_a_filesort(alice, default_queue):
    now = timezone.now()
    finished = [
        TaskQueue(owner=alice, queue=default_queue, task_type="echo", status=TaskStatus.SUCCEEDED, finished_at=now)
        for _ in range(5000)
    ]
    TaskQueue.objects.bulk_create(finished, batch_size=1000)
    workers = [make_worker(f"host-{i}:{i + 1}:abc") for i in range(3)]
    for i, task in enumerate(enqueue_many(alice, 30)):
        run(task, workers[i % 3], lease_seconds=-5 if i % 2 else 60)
    enqueue_many(alice, 10, run_at=now - timedelta(hours=1))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE task_queue, task_worker, task_hourly_stats")
        cursor.fetchall()

    with CaptureQueriesContext(connection) as captured:
        console_workers.workers_data()
        console_workers.stuck_data()
    reads = [q["sql"] for q in captured.captured_queries if "`task_queue`" in q["sql"]]
    assert len(reads) == 3  # the workers' tasks, past their lease, the oldest runnable per queue
    for sql in reads:
        plan = [line for line in explain(sql, None) if line["table"] == "task_queue"]
        assert plan, sql
        for line in plan:
            assert line["type"] != "ALL", (sql, line)
            assert line["key"] in ("task_lease_idx", "task_claim_idx", "task_fair_idx"), (sql, line)
            assert "filesort" not in (line["extra"] or ""), (sql, line)
            assert "temporary" not in (line["extra"] or ""), (sql, line)
            assert int(line["rows"]) < 1000, (sql, line)  # the live set, not the 5,000 finished
    lease = next(sql for sql in reads if "lease_expires_at` <" in sql)
    assert explain(lease, None)[0]["key"] == "task_lease_idx"


# --- A real worker process drains ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_drained_worker_finishes_its_slow_task_claims_nothing_more_and_exits_zero(
    alice, staff, default_queue, start_worker
):
    slow = enqueue_many(alice, 1, task_type="sleep", payload={"seconds": 2})[0]
    worker = start_worker()
    wait_for(
        lambda: TaskQueue.objects.filter(
            pk=slow.pk, status=TaskStatus.RUNNING, progress_message__startswith="slept"
        ).exists(),
        what="the slow task to start",
    )
    waiting = enqueue_many(alice, 3)  # runnable now; the worker's one child is busy
    row_ = WorkerProcess.objects.get()
    assert row_.pid == worker.pid

    client = Client()
    client.force_login(staff)
    assert client.post(drain_url(row_)).status_code == 202

    assert worker.wait(60) == 0
    stored = TaskQueue.objects.get(pk=slow.pk)
    assert (stored.status, stored.attempts) == (TaskStatus.SUCCEEDED, 1)
    assert TaskQueue.objects.filter(pk__in=[t.pk for t in waiting], status=TaskStatus.PENDING, attempts=0).count() == 3
    assert not WorkerProcess.objects.exists()  # a clean exit deletes its row
    output = worker.output()
    assert "drain requested" in output and "stopping (drained)" in output


# --- Admin: the console's tables, read-only ------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["failuregroup", "bulkaction", "ownerqueuesettings", "workerprocess"])
def test_the_console_tables_are_listed_in_the_admin(staff_client, staff, alice, model):
    fail_for_good(alice, 1, error="E: boom")
    worker = make_worker(memory_rss_bytes=123456789)
    staff_client.post(drain_url(worker))
    OwnerQueueSettings.objects.create(user=alice, fair_weight=3)
    response = staff_client.get(f"/admin/tasks/{model}/")
    assert response.status_code == 200
    body = response.content.decode()
    expected = {
        "failuregroup": "E: boom",
        "bulkaction": worker.worker_id,
        "ownerqueuesettings": "alice",
        "workerprocess": "123456789",
    }[model]
    assert expected in body


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["failuregroup", "bulkaction"])
def test_failure_groups_and_bulk_actions_cannot_be_added_or_edited_in_the_admin(staff_client, staff, model):
    staff_client.post(drain_url(make_worker()))
    assert staff_client.get(f"/admin/tasks/{model}/add/").status_code == 403
    if model == "bulkaction":
        pk = BulkAction.objects.get().pk
        assert staff_client.post(f"/admin/tasks/bulkaction/{pk}/change/", {"state": "queued"}).status_code == 403
        assert BulkAction.objects.get().state == BulkActionState.DONE
        assert staff_client.post(f"/admin/tasks/bulkaction/{pk}/delete/", {"post": "yes"}).status_code == 403
        assert BulkAction.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "text"),
    [
        (WORKERS, "每个已注册的工作进程及其正在运行的任务"),
        (STUCK, "超过租约的运行中任务"),
        ("/admin/taskhub/console/tasks/", "任务搜索"),
    ],
)
def test_the_panels_render_in_chinese(staff_client, path, text):
    make_worker()
    response = staff_client.get(path, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 200
    assert text in response.content.decode()
