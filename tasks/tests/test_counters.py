"""Counters stay equal to what a brute-force count of task_queue says."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from tasks import counters, selectors, services
from tasks.models import FINISHED_STATUSES, QueueConfig, TaskHourlyStats, TaskQueue, TaskStatus, TaskStatusCount
from tasks.tests.factories import finished_fields, make_task

pytestmark = pytest.mark.django_db


def status_counts_from_counters() -> Counter:
    return Counter({(r.owner_id, r.queue_id, r.status): r.count for r in TaskStatusCount.objects.all() if r.count})


def status_counts_brute_force() -> Counter:
    return Counter((t.owner_id, t.queue_id, t.status) for t in TaskQueue.objects.filter(status__in=FINISHED_STATUSES))


def hourly_snapshot() -> dict:
    return {
        (r.owner_id, r.hour, r.queue_id): (
            r.created,
            r.succeeded,
            r.failed,
            r.cancelled,
            r.started,
            round(r.wait_seconds_sum, 3),
            round(r.run_seconds_sum, 3),
        )
        for r in TaskHourlyStats.objects.all()
    }


def create(owner, **fields) -> TaskQueue:
    return make_task(owner, **fields)  # creating a task counts nothing: it is counted when it finishes


def finish(task: TaskQueue, status: str) -> None:
    with transaction.atomic():
        now = timezone.now()
        task.status = status
        task.started_at = now - timedelta(seconds=2) if status != TaskStatus.CANCELLED else None
        task.finished_at = now
        task.save(update_fields=["status", "started_at", "finished_at"])
        counters.record_finished([task])


def test_counters_follow_creation_finish_retry_and_delete(alice, bob):
    other = QueueConfig.objects.create(name="other")
    rng = random.Random(7)
    tasks = [create(rng.choice([alice, bob]), queue=rng.choice([other, None])) for _ in range(40)]
    for task in tasks[:30]:
        finish(task, rng.choice(FINISHED_STATUSES))
    for task in tasks[:10]:
        task.refresh_from_db()
        if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            services.task_retry(task=task)
    services.tasks_delete(queryset=TaskQueue.objects.filter(pk__in=[t.pk for t in tasks[20:25]]))

    assert status_counts_from_counters() == status_counts_brute_force()
    incremental = hourly_snapshot()
    # Creations are counted when tasks finish and stay history when they are deleted (5 here);
    # reopened tasks are uncounted until they finish again, and live ones are counted live.
    finished_now = TaskQueue.objects.filter(status__in=FINISHED_STATUSES).count()
    assert sum(v[0] for v in incremental.values()) == finished_now + 5
    assert selectors.task_statistics(user=None).last_24_hours.created == 40

    with transaction.atomic():
        counters.rebuild()
    assert status_counts_from_counters() == status_counts_brute_force()


def test_rebuild_matches_incremental_counting_of_finished_tasks(alice):
    base = timezone.now() - timedelta(hours=5)
    for i, status in enumerate([TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SUCCEEDED]):
        with transaction.atomic():
            task = make_task(alice, **finished_fields(status, created=base + timedelta(hours=i), wait=3, run=4))
            counters.record_finished([task])
    incremental = hourly_snapshot()
    counted = status_counts_from_counters()
    counters.rebuild()
    assert hourly_snapshot() == incremental
    assert status_counts_from_counters() == counted
    row = TaskHourlyStats.objects.order_by("hour").first()
    assert (row.started, row.wait_seconds_sum, row.run_seconds_sum) == (1, 3.0, 4.0)


@pytest.mark.django_db(transaction=True)
def test_counters_refuse_to_change_outside_a_transaction(alice):
    task = make_task(alice, **finished_fields(TaskStatus.SUCCEEDED))
    with pytest.raises(RuntimeError, match="same transaction"):
        counters.record_finished([task])


def test_record_finished_rejects_unfinished_tasks(alice):
    task = make_task(alice)
    with pytest.raises(ValueError), transaction.atomic():
        counters.record_finished([task])


def test_hour_of_truncates_in_utc():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    moment = datetime(2026, 3, 1, 10, 45, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert counters.hour_of(moment) == datetime(2026, 3, 1, 2, 0, tzinfo=ZoneInfo("UTC"))
