"""Statistics and queue status: equal to brute force, a fixed number of queries, indexes only."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from statistics import mean
from unittest import mock

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import counters, selectors, services
from tasks.models import FINISHED_STATUSES, QueueConfig, TaskQueue, TaskStatus
from tasks.specs import TaskSpec
from tasks.tests.conftest import explain

pytestmark = pytest.mark.django_db


def enqueue_at(user, created_at, queue: str) -> TaskQueue:
    with mock.patch("django.utils.timezone.now", return_value=created_at):
        return services.task_enqueue(user=user, task_type="echo", queue=queue).task


def finish(task: TaskQueue, status: str, *, wait: float, run: float) -> None:
    """Finish a task as the worker would: fields and counters in one transaction."""
    with transaction.atomic():
        task.status = status
        task.started_at = task.created_at + timedelta(seconds=wait)
        task.finished_at = task.started_at + timedelta(seconds=run)
        task.save(update_fields=["status", "started_at", "finished_at"])
        counters.record_finished([task])


def brute_force(tasks: list[TaskQueue], now) -> dict:
    rows = [TaskQueue.objects.get(pk=t.pk) for t in tasks]
    names = dict(QueueConfig.objects.values_list("id", "name"))
    since = {h: selectors.window_start(now, h) for h in (1, 24)}
    window = selectors.window_start(now, 24)

    def events(hours: int) -> tuple[int, ...]:
        created = sum(r.created_at >= since[hours] for r in rows)
        ended = [r.status for r in rows if r.finished_at and r.finished_at >= since[hours]]
        return (created, ended.count("succeeded"), ended.count("failed"), ended.count("cancelled"))

    in_window = [r for r in rows if r.finished_at and r.finished_at >= window and r.started_at]
    outcomes = Counter(r.status for r in rows if r.finished_at and r.finished_at >= window)
    decided = outcomes["succeeded"] + outcomes["failed"]
    return {
        "by_status": {s: sum(r.status == s for r in rows) for s in TaskStatus.values},
        "by_queue": Counter((names[r.queue_id], r.status) for r in rows),
        "last_hour": events(1),
        "last_24_hours": events(24),
        "failure_rate": outcomes["failed"] / decided if decided else None,
        "wait": mean((r.started_at - r.created_at).total_seconds() for r in in_window) if in_window else None,
        "run": mean((r.finished_at - r.started_at).total_seconds() for r in in_window) if in_window else None,
    }


def assert_matches(stats: selectors.TaskStatistics, expected: dict) -> None:
    actual = as_comparable(stats)
    floats = ("failure_rate", "wait", "run")
    assert {k: v for k, v in actual.items() if k not in floats} == {
        k: v for k, v in expected.items() if k not in floats
    }
    for key in floats:
        assert actual[key] == pytest.approx(expected[key], rel=1e-6), key


def as_comparable(stats: selectors.TaskStatistics) -> dict:
    return {
        "by_status": stats.by_status,
        "by_queue": Counter({(q, s): n for q, counts in stats.by_queue.items() for s, n in counts.items() if n}),
        "last_hour": tuple(getattr(stats.last_hour, c) for c in ("created", "succeeded", "failed", "cancelled")),
        "last_24_hours": tuple(
            getattr(stats.last_24_hours, c) for c in ("created", "succeeded", "failed", "cancelled")
        ),
        "failure_rate": stats.failure_rate,
        "wait": stats.mean_wait_seconds,
        "run": stats.mean_run_seconds,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_statistics_equal_a_brute_force_count_of_random_tasks(alice, bob, default_queue, settings, seed):
    settings.TASKHUB_STATS_WINDOW_HOURS = 24
    QueueConfig.objects.create(name="other")
    rng = random.Random(seed)
    now = timezone.now()
    tasks = []
    for _ in range(120):
        created = now - timedelta(seconds=rng.uniform(0, 40 * 3600))
        task = enqueue_at(rng.choice([alice, bob]), created, rng.choice(["default", "other"]))
        tasks.append(task)
        outcome = rng.choice(["pending", "running", *FINISHED_STATUSES, *FINISHED_STATUSES])
        age = (now - created).total_seconds()
        if outcome == "running":
            TaskQueue.objects.filter(pk=task.pk).update(status=TaskStatus.RUNNING)
        elif outcome in FINISHED_STATUSES:
            wait = rng.uniform(0, age / 2)
            finish(task, outcome, wait=wait, run=rng.uniform(0, age - wait))

    for user in (alice, bob):
        own = [t for t in tasks if t.owner_id == user.pk]
        assert_matches(selectors.task_statistics(user=user, now=now), brute_force(own, now))
    assert_matches(selectors.task_statistics(user=None, now=now), brute_force(tasks, now))

    # A retry moves a task out of its finished count at once (its past outcome stays in the windows).
    retried = next(t for t in tasks if TaskQueue.objects.get(pk=t.pk).status == TaskStatus.FAILED)
    services.task_retry(task=retried)
    expected = brute_force(tasks, now)["by_status"]
    assert selectors.task_statistics(user=None, now=now).by_status == expected


def test_statistics_of_a_user_without_tasks_are_zeros_and_nulls(alice, default_queue):
    stats = selectors.task_statistics(user=alice)
    assert set(stats.by_status.values()) == {0}
    assert stats.by_queue == {"default": dict.fromkeys(TaskStatus.values, 0)}
    assert (stats.failure_rate, stats.mean_wait_seconds, stats.mean_run_seconds) == (None, None, None)


def test_windows_are_whole_utc_hours_including_the_current_one():
    now = timezone.now().replace(hour=10, minute=17)
    assert selectors.window_start(now, 1) == now.replace(minute=0, second=0, microsecond=0)
    assert selectors.window_start(now, 24) == now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)


def test_statistics_cost_four_queries_whatever_the_number_of_tasks(
    alice, bob, default_queue, django_assert_num_queries
):
    def run() -> None:
        with django_assert_num_queries(4):
            selectors.task_statistics(user=alice)
        with django_assert_num_queries(4):
            selectors.task_statistics(user=None)

    run()
    for user in (alice, bob):
        services.tasks_enqueue_bulk(user=user, specs=[TaskSpec("echo")] * 50)
    for task in TaskQueue.objects.all()[:40]:
        finish(task, TaskStatus.SUCCEEDED, wait=1, run=1)
    run()


def test_queue_status_costs_three_queries(alice, bob, default_queue, django_user_model, django_assert_num_queries):
    services.tasks_enqueue_bulk(user=alice, specs=[TaskSpec("echo")] * 20)
    services.tasks_enqueue_bulk(user=bob, specs=[TaskSpec("echo")] * 2)
    later = timezone.now() + timedelta(hours=1)
    carol = django_user_model.objects.create_user("carol")
    services.tasks_enqueue_bulk(user=carol, specs=[TaskSpec("echo", run_at=later)] * 3)  # not runnable yet
    dave = django_user_model.objects.create_user("dave")
    TaskQueue.objects.filter(pk=services.task_enqueue(user=dave, task_type="echo").task.pk).update(
        status=TaskStatus.RUNNING
    )
    QueueConfig.objects.create(name="other")
    with django_assert_num_queries(3):
        statuses = selectors.queue_statuses()
    assert [(s.name, s.pending, s.scheduled, s.running, s.active_owners) for s in statuses] == [
        ("default", 22, 3, 1, 2),  # owners with runnable tasks: alice and bob, not carol nor dave
        ("other", 0, 0, 0, 0),
    ]
    assert selectors.fair_shares(timezone.now(), list(QueueConfig.objects.all())).owners == {default_queue.pk: 2}


# --- On MariaDB/MySQL: every statistics query reads task_queue through an index --------------


FINISHED_PER_USER = 5000
ACTIVE_PER_USER = 40


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_statistics_and_queue_status_read_task_queue_only_through_indexes(alice, bob, default_queue, django_user_model):
    # A realistic shape: many finished tasks (inserted finished, as a long-running system has
    # them, then counted by rebuilding the counters) and a small active backlog.
    now = timezone.now()
    finished = [
        TaskQueue(
            owner=user,
            queue=default_queue,
            task_type="echo",
            status=TaskStatus.SUCCEEDED,
            created_at=now,
            started_at=now,
            finished_at=now,
        )
        for user in (alice, bob)
        for _ in range(FINISHED_PER_USER)
    ]
    TaskQueue.objects.bulk_create(finished, batch_size=1000)
    counters.rebuild()
    for user in (alice, bob):
        services.tasks_enqueue_bulk(user=user, specs=[TaskSpec("echo")] * ACTIVE_PER_USER)
    running_ids = list(TaskQueue.objects.filter(status=TaskStatus.PENDING).values_list("id", flat=True)[:10])
    TaskQueue.objects.filter(id__in=running_ids).update(status=TaskStatus.RUNNING, started_at=now)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE task_queue, task_status_count, task_hourly_stats, task_worker")
        cursor.fetchall()

    with CaptureQueriesContext(connection) as captured:
        selectors.task_statistics(user=alice)
        selectors.task_statistics(user=None)
        selectors.queue_statuses()
    assert len(captured.captured_queries) == 11
    plans = {q["sql"]: explain(q["sql"]) for q in captured.captured_queries}
    for sql, plan in plans.items():
        for row in plan:
            if row["table"] in ("task_queue", "task_hourly_stats", "task_worker"):
                assert row["type"] != "ALL" and row["key"], f"full scan of {row['table']}:\n{sql}\n{plan}"
            if row["table"] == "task_queue":
                # Reads only the active rows' index entries, not the finished ones.
                assert int(row["rows"]) < FINISHED_PER_USER // 10, f"reads too many rows:\n{sql}\n{plan}"
    touching = [sql for sql in plans if "`task_queue`" in sql]
    assert len(touching) == 3  # active counts (own, all), the queue backlog with its active owners
    for sql in touching:
        if "`owner_id` =" in sql:
            continue
        extras = [row["extra"] or "" for row in plans[sql] if row["table"] == "task_queue"]
        keys = [row["key"] for row in plans[sql] if row["table"] == "task_queue"]
        # Each is one read of index entries alone, grouped in the index's order: never row by
        # row, and no temporary table to group in.
        assert extras and all("using index" in extra.lower() for extra in extras), f"{sql}\n{plans[sql]}"
        assert not [extra for extra in extras if "temporary" in extra.lower()], f"{sql}\n{plans[sql]}"
        if "`created_at`" in sql:
            # Everyone's live counts with their creations in the windows: the live index
            # (status, queue, created_at).
            assert keys == ["task_live_idx"], plans[sql]
        else:
            # The queue backlog and its owners: the fair index (status, queue, owner, priority, run_at).
            assert keys == ["task_fair_idx"], plans[sql]

    # A list page reads an owner's few rows through an owner index, and never sorts all of a big
    # owner's tasks: it walks (owner, id) or the primary key backwards, stopping at the page size.
    carol = django_user_model.objects.create_user("carol")
    services.tasks_enqueue_bulk(user=carol, specs=[TaskSpec("echo")] * 3)
    plans = {}
    for user in (carol, alice):
        with CaptureQueriesContext(connection) as captured:
            list(selectors.task_list(user=user)[:51])
        (plans[user.username],) = [
            r for r in explain(captured.captured_queries[0]["sql"]) if r["table"] == "task_queue"
        ]
    assert plans["carol"]["key"].startswith("task_owner_") and int(plans["carol"]["rows"]) <= 10, plans
    assert "filesort" not in (plans["alice"]["extra"] or ""), plans


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_statistics_and_queue_status_are_not_blocked_by_a_worker_holding_locks(alice, default_queue):
    """A worker mid-claim (task rows locked) and mid-finish (counter rows locked) blocks no reader."""
    services.tasks_enqueue_bulk(user=alice, specs=[TaskSpec("echo")] * 5)
    done = services.task_enqueue(user=alice, task_type="echo").task
    services.task_cancel(task=done)
    worker = connections.create_connection("default")
    try:
        with worker.cursor() as cursor:
            cursor.execute("START TRANSACTION")
            cursor.execute("SELECT id FROM task_queue WHERE status = 'pending' FOR UPDATE")
            cursor.execute("UPDATE task_status_count SET count = count + 0")
            cursor.execute("UPDATE task_hourly_stats SET created = created + 0")
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
        stats = selectors.task_statistics(user=alice)
        statuses = selectors.queue_statuses()
    finally:
        worker.rollback()
        worker.close()
    assert (stats.by_status["pending"], stats.by_status["cancelled"]) == (5, 1)
    assert statuses[0].pending == 5
