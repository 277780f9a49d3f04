"""Fair scheduling, per-key concurrency and rate limits with real `run_worker` processes."""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import services
from tasks.limits import parse_rate
from tasks.models import ACTIVE_STATUSES, QueueConfig, TaskQueue, TaskStatus
from tasks.tests.conftest import WORKER_ENV, enqueue_many, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

BATCH = 20


def stop_all(workers) -> list[int]:
    for worker in workers:
        worker.signal(signal.SIGTERM)
    return [worker.wait(60) for worker in workers]


def test_a_small_users_tasks_start_within_two_claim_batches_of_a_big_backlog(alice, bob, start_worker):
    queue = QueueConfig.objects.create(name="shared", fairness="owner")
    enqueue_many(alice, 20_000, queue=queue)
    worker = start_worker("--queue", "shared", "--concurrency", "2", TASKHUB_CLAIM_BATCH_SIZE=str(BATCH))
    wait_for(
        lambda: TaskQueue.objects.filter(owner=alice, status=TaskStatus.SUCCEEDED).count() >= 3 * BATCH,
        what="the worker to be well into alice's backlog",
    )
    bobs = enqueue_many(bob, 10, queue=queue)
    # Enqueued = committed: on SQLite the insert waits for the worker's claims to let go of the one
    # write lock, and the tasks claimed meanwhile were claimed before bob's tasks existed.
    enqueued_at = timezone.now()
    ids = [task.pk for task in bobs]
    wait_for(
        lambda: not TaskQueue.objects.filter(pk__in=ids, started_at__isnull=True).exists(),
        timeout=60,
        what="bob's tasks to start",
    )
    assert stop_all([worker]) == [0]

    for task in TaskQueue.objects.filter(pk__in=ids):
        # Tasks started after bob's enqueue and before his task: at most the batch under way then, and one more.
        before = TaskQueue.objects.filter(owner=alice, started_at__gte=enqueued_at, started_at__lt=task.started_at)
        assert before.count() <= 2 * BATCH, (task.pk, before.count())
    assert TaskQueue.objects.filter(owner=alice, status=TaskStatus.PENDING).count() > 10_000, "the backlog was real"


def test_per_key_concurrency_one_never_runs_two_tasks_of_a_key_at_once(alice, executions_table, start_worker):
    queue = QueueConfig.objects.create(name="keyed", per_key_concurrency=1)
    workers = [start_worker("--queue", "keyed", "--concurrency", "2") for _ in range(3)]
    tasks = []
    for i in range(300):
        tasks += enqueue_many(
            alice, queue=queue, task_type="test.record", payload={"sleep": 0.01}, concurrency_key=f"account-{i % 10}"
        )
    wait_for(
        lambda: not TaskQueue.objects.filter(status__in=ACTIVE_STATUSES).exists(),
        timeout=240,
        interval=0.5,
        what="the queue to drain",
    )
    assert stop_all(workers) == [0, 0, 0]

    key_of = {task.pk: task.concurrency_key for task in tasks}
    runs = executions_table()
    assert sorted(task_id for task_id, *_ in runs) == sorted(key_of), "every task ran, once"
    by_key = defaultdict(list)
    for task_id, _attempt, _worker, _pid, started, finished in runs:
        by_key[key_of[task_id]].append((started, finished))
    assert len(by_key) == 10
    for key, spans in by_key.items():
        spans.sort()
        for (_, finished), (started, _) in zip(spans, spans[1:], strict=False):
            assert started >= finished, f"two tasks of {key} ran at once"
    assert len({worker for _, _, worker, *_ in runs}) >= 2, "the work was shared"


def test_a_rate_limit_holds_across_three_workers(alice, start_worker):
    queue = QueueConfig.objects.create(name="rated", rate_limit="50/s")
    burst = parse_rate(queue.rate_limit).burst
    enqueue_many(alice, 1500, queue=queue)
    workers = [start_worker("--queue", "rated", "--concurrency", "2") for _ in range(3)]
    first = wait_for(
        lambda: TaskQueue.objects.filter(started_at__isnull=False).order_by("started_at").first(),
        what="the first start",
    )
    time.sleep(max(0.0, 11.0 - (time.time() - first.started_at.timestamp())))
    assert stop_all(workers) == [0, 0, 0]

    t0 = first.started_at
    starts = sorted(
        TaskQueue.objects.filter(started_at__gte=t0, started_at__lt=t0 + timedelta(seconds=10)).values_list(
            "started_at", flat=True
        )
    )
    assert 450 <= len(starts) <= 550, len(starts)
    seconds = [moment.timestamp() for moment in starts]
    j = 0
    for i, start in enumerate(seconds):
        while j < len(seconds) and seconds[j] < start + 1.0:
            j += 1
        assert j - i <= 50 + burst, f"{j - i} starts in the second from {starts[i]}"


def test_a_queue_change_reaches_a_running_worker_within_a_poll_interval(alice, start_worker):
    queue = QueueConfig.objects.create(name="live")
    worker = start_worker("--queue", "live")
    enqueue_many(alice, 2, queue=queue)
    wait_for(lambda: not TaskQueue.objects.filter(status__in=ACTIVE_STATUSES).exists(), what="the first tasks")

    services.queue_update(queue=queue, changes={"rate_limit": "1/h"})  # one start, then one an hour
    time.sleep(3 * float(WORKER_ENV["TASKHUB_POLL_INTERVAL_SECONDS"]))
    held = enqueue_many(alice, 5, queue=queue)
    time.sleep(2)
    started = TaskQueue.objects.filter(pk__in=[task.pk for task in held], started_at__isnull=False).count()
    assert stop_all([worker]) == [0]
    assert started == 1
