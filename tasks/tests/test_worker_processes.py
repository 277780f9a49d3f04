"""Real `manage.py run_worker` processes against the test database: the promises end to end.

No task is lost, none runs on two workers at once, none stays `running` forever.
"""

from __future__ import annotations

import signal
import socket
from datetime import timedelta

import psutil
import pytest
from django.db import connection
from django.utils import timezone

from core.db.session import FORCED_ROLLBACK_MARKER
from tasks import services
from tasks.models import ACTIVE_STATUSES, QueueConfig, TaskQueue, TaskStatus, TaskStatusCount, WorkerProcess
from tasks.tests.conftest import enqueue_many, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def all_finished() -> bool:
    return not TaskQueue.objects.filter(status__in=ACTIVE_STATUSES).exists()


def running_for_sure(task: TaskQueue) -> bool:
    """True once the task's handler has reported progress (the built-in sleep does at once)."""
    return TaskQueue.objects.filter(
        pk=task.pk, status=TaskStatus.RUNNING, progress_message__startswith="slept"
    ).exists()


def registered(count: int) -> bool:
    return WorkerProcess.objects.count() == count


def stop_all(workers, signum: int = signal.SIGTERM) -> list[int]:
    for worker in workers:
        worker.signal(signum)
    return [worker.wait(60) for worker in workers]


@pytest.mark.mysql
def test_four_workers_drain_2000_tasks_running_each_exactly_once(alice, default_queue, executions_table, start_worker):
    workers = [start_worker("--concurrency", "2") for _ in range(4)]
    wait_for(lambda: registered(4), what="four workers to register")
    tasks = enqueue_many(alice, 2000, task_type="test.record")  # all at once, while they all poll

    wait_for(all_finished, timeout=150, interval=0.5, what="the queue to drain")
    assert stop_all(workers) == [0, 0, 0, 0]

    runs = executions_table()
    assert len(runs) == 2000
    assert {task_id for task_id, *_ in runs} == {task.pk for task in tasks}
    assert TaskQueue.objects.filter(status=TaskStatus.SUCCEEDED, attempts=1).count() == 2000
    for task in TaskQueue.objects.all():
        assert task.result["worker"] == task.claimed_by, "recorded by the worker that ran it"
    assert len({worker for _, _, worker, *_ in runs}) >= 2, "the work was shared"
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.SUCCEEDED).count == 2000
    assert not WorkerProcess.objects.exists()


@pytest.mark.mysql
def test_a_task_of_a_killed_worker_is_taken_back_after_its_lease_and_succeeds_elsewhere(alice, start_worker):
    queue = QueueConfig.objects.create(
        name="leased", task_timeout_seconds=3, retry_backoff_seconds=1, retry_backoff_max_seconds=1
    )
    task = enqueue_many(alice, queue=queue, task_type="sleep", payload={"seconds": 1.5}, max_attempts=3)[0]
    first = start_worker("--queue", "leased")
    wait_for(lambda: running_for_sure(task), what="the task to start")
    first_id = TaskQueue.objects.get(pk=task.pk).claimed_by
    children = psutil.Process(first.pid).children()
    assert children, "handlers run in child processes"

    first.signal(signal.SIGKILL)
    first.wait(10)
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), timeout=10)
    second = start_worker("--queue", "leased")

    wait_for(lambda: TaskQueue.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, what="the task to succeed")
    stored = TaskQueue.objects.get(pk=task.pk)
    assert stored.attempts == 2
    assert stored.claimed_by.startswith(f"{socket.gethostname()[:100]}:{second.pid}:")
    assert stored.claimed_by != first_id
    assert f"took back 1 tasks whose worker stopped renewing their lease (#{task.pk} pending)" in second.output()
    wait_for(lambda: not WorkerProcess.objects.filter(worker_id=first_id).exists(), what="the dead worker's row")
    assert stop_all([second]) == [0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_lets_the_running_task_finish_and_exits_zero(alice, default_queue, start_worker, signum):
    task = enqueue_many(alice, task_type="sleep", payload={"seconds": 1.5})[0]
    worker = start_worker()
    wait_for(lambda: running_for_sure(task), what="the task to start")

    assert stop_all([worker], signum) == [0]

    stored = TaskQueue.objects.get(pk=task.pk)
    assert (stored.status, stored.attempts) == (TaskStatus.SUCCEEDED, 1)
    assert f"stopping ({signal.Signals(signum).name})" in worker.output()
    assert not WorkerProcess.objects.exists()


def test_a_task_still_running_when_the_grace_ends_is_handed_back(alice, default_queue, start_worker):
    task = enqueue_many(alice, task_type="sleep", payload={"seconds": 60})[0]
    worker = start_worker(TASKHUB_SHUTDOWN_GRACE_SECONDS="1")
    wait_for(lambda: running_for_sure(task), what="the task to start")

    assert stop_all([worker]) == [0]

    stored = TaskQueue.objects.get(pk=task.pk)
    assert (stored.status, stored.attempts, stored.claimed_by, stored.lease_expires_at) == ("pending", 0, "", None)
    assert "handing back task" in worker.output()


@pytest.mark.mysql
def test_max_concurrency_one_holds_across_three_workers(alice, executions_table, start_worker):
    queue = QueueConfig.objects.create(name="single", max_concurrency=1)
    workers = [start_worker("--concurrency", "2") for _ in range(3)]
    wait_for(lambda: registered(3), what="three workers to register")
    enqueue_many(alice, 8, queue=queue, task_type="test.record", payload={"sleep": 0.3})

    most = 0
    with connection.cursor() as cursor:
        while not all_finished():
            cursor.execute("SELECT COUNT(*) FROM task_queue WHERE status = 'running'")
            most = max(most, cursor.fetchone()[0])
    assert stop_all(workers) == [0, 0, 0]

    assert most == 1
    runs = sorted(executions_table(), key=lambda run: run[4])
    assert len(runs) == 8
    for before, after in zip(runs, runs[1:], strict=False):
        assert after[4] >= before[5], "two tasks of the queue overlapped"


def test_a_paused_queue_is_left_untouched(alice, default_queue, start_worker):
    paused = QueueConfig.objects.create(name="paused", is_paused=True)
    held = enqueue_many(alice, 5, queue=paused)
    free = enqueue_many(alice, 5)

    assert start_worker("--burst").wait(60) == 0

    assert set(TaskQueue.objects.filter(pk__in=[t.pk for t in free]).values_list("status", flat=True)) == {"succeeded"}
    untouched = TaskQueue.objects.filter(pk__in=[t.pk for t in held])
    assert set(untouched.values_list("status", "attempts", "claimed_by")) == {("pending", 0, "")}


def test_tasks_run_by_priority_then_run_at_and_not_before_run_at(alice, default_queue, executions_table, start_worker):
    now = timezone.now()

    def task(priority: int, minutes: float) -> TaskQueue:
        return enqueue_many(alice, task_type="test.record", priority=priority, run_at=now + timedelta(minutes=minutes))[
            0
        ]

    low = task(-3, -20)
    first_old = task(0, -10)
    twin_b_first, twin_b_second = task(0, -7), task(0, -7)  # same run_at: by id
    newer = task(5, -1)
    top_old = task(5, -5)
    future = task(100, 60)

    assert start_worker("--burst", "--concurrency", "1").wait(60) == 0

    order = [task_id for task_id, *_ in executions_table()]
    assert order == [t.pk for t in (top_old, newer, first_old, twin_b_first, twin_b_second, low)]
    assert TaskQueue.objects.get(pk=future.pk).status == TaskStatus.PENDING


def test_retries_follow_the_backoff_and_end_failed_with_the_error(alice, executions_table, start_worker):
    queue = QueueConfig.objects.create(name="flaky", retry_backoff_seconds=1, retry_backoff_max_seconds=2)
    task = enqueue_many(
        alice, queue=queue, task_type="test.record_then_fail", payload={"message": "boom"}, max_attempts=3
    )[0]
    worker = start_worker("--queue", "flaky")

    wait_for(lambda: TaskQueue.objects.get(pk=task.pk).status == TaskStatus.FAILED, what="the task to fail")
    assert stop_all([worker]) == [0]

    stored = TaskQueue.objects.get(pk=task.pk)
    assert stored.attempts == 3
    assert stored.error.startswith("RuntimeError: boom")
    assert "Traceback (most recent call last)" in stored.error
    runs = executions_table()
    assert [attempt for _, attempt, *_ in runs] == [1, 2, 3]
    # Equal jitter: at least half of each step (1 s, then 2 s) passes between attempts.
    assert runs[1][4] - runs[0][5] >= 0.5
    assert runs[2][4] - runs[1][5] >= 1.0
    assert "attempt 1/3 failed, retrying" in worker.output()
    assert f"task {task.pk} (test.record_then_fail) failed after 3 attempts: RuntimeError: boom" in worker.output()


@pytest.mark.mysql
def test_a_handler_over_its_timeout_does_not_wedge_the_worker(alice, start_worker):
    queue = QueueConfig.objects.create(name="short", task_timeout_seconds=2)
    hung = enqueue_many(alice, queue=queue, task_type="test.hang", priority=10, max_attempts=1)[0]
    others = enqueue_many(alice, 5, queue=queue)

    assert start_worker("--burst").wait(60) == 0

    assert TaskQueue.objects.get(pk=hung.pk).status == TaskStatus.FAILED
    assert "timeout (2s)" in TaskQueue.objects.get(pk=hung.pk).error
    assert set(TaskQueue.objects.filter(pk__in=[t.pk for t in others]).values_list("status", flat=True)) == {
        "succeeded"
    }


@pytest.mark.mysql
def test_the_worker_carries_on_when_its_connections_are_killed(alice, default_queue, start_worker):
    def kill_other_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
            )
            ids = [row[0] for row in cursor.fetchall()]
            for thread_id in ids:
                cursor.execute("KILL %s", [thread_id])
        return len(ids)

    task = enqueue_many(alice, task_type="sleep", payload={"seconds": 1.5})[0]
    worker = start_worker()
    wait_for(lambda: running_for_sure(task), what="the task to start")
    assert kill_other_connections() >= 1  # mid-task
    wait_for(lambda: TaskQueue.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, what="the task to succeed")
    assert kill_other_connections() >= 1  # between tasks
    later = enqueue_many(alice, 5)
    wait_for(all_finished, what="the later tasks")

    assert set(TaskQueue.objects.filter(pk__in=[t.pk for t in later]).values_list("status", flat=True)) == {"succeeded"}
    assert worker.popen.poll() is None, "the worker is still running"
    assert stop_all([worker]) == [0]


def test_a_cancelled_sleep_task_stops_and_ends_cancelled(alice, default_queue, start_worker):
    task = enqueue_many(alice, task_type="sleep", payload={"seconds": 60})[0]
    worker = start_worker()
    wait_for(lambda: running_for_sure(task), what="the task to start")

    assert services.task_cancel(task=task, by=alice) is services.CancelOutcome.CANCEL_REQUESTED

    wait_for(lambda: TaskQueue.objects.get(pk=task.pk).status == TaskStatus.CANCELLED, timeout=30, what="cancel")
    assert TaskQueue.objects.get(pk=task.pk).progress_message.startswith("cancelled after")
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.CANCELLED).count == 1
    assert stop_all([worker]) == [0]


def test_a_transaction_left_open_by_a_handler_is_rolled_back_and_logged(alice, default_queue, start_worker):
    task = enqueue_many(alice, task_type="test.leave_transaction_open")[0]
    after = enqueue_many(alice, 3)

    worker = start_worker("--burst")
    assert worker.wait(60) == 0

    assert FORCED_ROLLBACK_MARKER.format(context_id=f"task-{task.pk}") in worker.output()
    assert set(TaskQueue.objects.values_list("status", flat=True)) == {"succeeded"}
    assert len(after) == 3


@pytest.mark.sqlite
def test_two_workers_share_one_sqlite_file(alice, default_queue, executions_table, start_worker):
    workers = [start_worker() for _ in range(2)]
    wait_for(lambda: registered(2), what="two workers to register")
    tasks = enqueue_many(alice, 300, task_type="test.record")

    wait_for(all_finished, timeout=120, interval=0.5, what="the queue to drain")
    assert stop_all(workers) == [0, 0]

    runs = executions_table()
    assert sorted(task_id for task_id, *_ in runs) == sorted(task.pk for task in tasks)
    assert TaskQueue.objects.filter(status=TaskStatus.SUCCEEDED, attempts=1).count() == 300
