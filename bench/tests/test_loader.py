from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from bench import loader
from tasks import counters, failure_groups, hour_stats
from tasks.models import (
    FailureGroup,
    TaskHourlyStats,
    TaskHourStats,
    TaskMinuteStats,
    TaskQueue,
    TaskStatus,
    TaskStatusCount,
)

pytestmark = pytest.mark.django_db


def _hours() -> dict:
    return {
        (r.queue_id, r.hour): [getattr(r, c) for c in counters.MINUTE_EVENT_COLUMNS]
        for r in TaskHourStats.objects.all()
    }


def _counters() -> tuple[dict, dict, dict]:
    statuses = {(r.owner_id, r.queue_id, r.status): r.count for r in TaskStatusCount.objects.all()}
    hourly = {
        (r.owner_id, r.hour, r.queue_id): [getattr(r, c) for c in counters.HOURLY_EVENT_COLUMNS]
        for r in TaskHourlyStats.objects.all()
    }
    minutes = {
        (r.queue_id, r.minute): [getattr(r, c) for c in counters.MINUTE_EVENT_COLUMNS]
        for r in TaskMinuteStats.objects.all()
    }
    return statuses, hourly, minutes


def _assert_counters_equal_a_rebuild() -> None:
    loaded_statuses, loaded_hourly, loaded_minutes = _counters()
    loaded_hours, loaded_mark = _hours(), hour_stats.rolled_up_to()
    counters.rebuild()
    hour_stats.rebuild()
    rebuilt_statuses, rebuilt_hourly, rebuilt_minutes = _counters()
    rebuilt_hours, rebuilt_mark = _hours(), hour_stats.rolled_up_to()
    assert loaded_statuses == rebuilt_statuses
    assert loaded_hourly.keys() == rebuilt_hourly.keys()
    for key, values in rebuilt_hourly.items():
        assert loaded_hourly[key] == pytest.approx(values), key
    assert loaded_minutes.keys() == rebuilt_minutes.keys()
    for key, values in rebuilt_minutes.items():
        assert loaded_minutes[key] == pytest.approx(values), key
    # The hour rollup, up to the loader's mark (an hour may have ended between the two).
    if loaded_mark is None:  # nothing was loaded with a history to roll up
        assert loaded_hours == {}
        return
    assert rebuilt_mark >= loaded_mark
    rebuilt_hours = {key: values for key, values in rebuilt_hours.items() if key[1] < loaded_mark}
    assert loaded_hours.keys() == rebuilt_hours.keys()
    for key, values in rebuilt_hours.items():
        assert loaded_hours[key] == pytest.approx(values), key


def test_it_loads_counters_that_match_a_full_rebuild() -> None:
    owners = loader.ensure_users(5, password="")["owner_ids"]
    result = loader.load(3000, owner_ids=owners, days=3, seed=7)
    assert result["rows"] == TaskQueue.objects.count() == 3000
    assert set(TaskQueue.objects.values_list("status", flat=True)) == set(TaskStatus.values)
    assert TaskQueue.objects.values("owner_id").distinct().count() == 5
    assert TaskMinuteStats.objects.exists() and TaskHourStats.objects.exists()
    _assert_counters_equal_a_rebuild()


def test_failed_tasks_are_grouped_as_a_worker_failing_them_would() -> None:
    owners = loader.ensure_users(2, password="")["owner_ids"]
    loader.load(3000, owner_ids=owners, days=3, seed=7)
    failed = TaskQueue.objects.filter(status=TaskStatus.FAILED)
    groups = {group.key: group for group in FailureGroup.objects.all()}
    assert len(groups) > 1
    assert sum(group.count for group in groups.values()) == failed.count() > 0
    for task in failed:
        group = groups[task.failure_group_id]
        assert failure_groups.fingerprint(task.error) == group.fingerprint
        assert group.first_seen <= task.finished_at <= group.last_seen


def test_it_leaves_nothing_for_a_worker_to_claim_or_recover() -> None:
    owners = loader.ensure_users(3, password="")["owner_ids"]
    loader.load(1000, owner_ids=owners, days=90, seed=3)
    now = timezone.now()
    assert not TaskQueue.objects.runnable(now).exists()
    assert not TaskQueue.objects.filter(status="running", lease_expires_at__lt=now + timedelta(days=1)).exists()
    oldest = TaskQueue.objects.order_by("created_at").first().created_at
    assert now - oldest > timedelta(days=89)


def test_it_counts_fresh_pending_tasks_as_created() -> None:
    loader.ensure_users(2, password="")
    added = loader.add_pending(120, username=loader.USER_NAME.format(0))
    fresh = TaskQueue.objects.filter(pk__gte=added["first_id"], pk__lte=added["last_id"])
    assert fresh.count() == added["count"] == 120
    assert TaskQueue.objects.runnable().count() == 120
    _assert_counters_equal_a_rebuild()


def test_it_refuses_to_load_into_a_table_that_holds_tasks() -> None:
    owners = loader.ensure_users(1, password="")["owner_ids"]
    loader.add_pending(1, username=loader.USER_NAME.format(0))
    with pytest.raises(RuntimeError, match="empty tables"):
        loader.load(10, owner_ids=owners)


def test_it_lets_only_the_first_user_and_staff_log_in_with_this_runs_password() -> None:
    loader.ensure_users(3, password="first-secret-123")
    loader.ensure_users(3, password="second-secret-456")
    users = {u.username: u for u in get_user_model().objects.all()}
    assert users[loader.USER_NAME.format(0)].check_password("second-secret-456")
    assert users[loader.STAFF_NAME].check_password("second-secret-456")
    assert users[loader.STAFF_NAME].is_staff
    assert not users[loader.USER_NAME.format(1)].has_usable_password()


def test_added_live_tasks_are_counted_and_left_alone_by_workers() -> None:
    owners = loader.ensure_users(3, password="")["owner_ids"]
    loader.load(1000, owner_ids=owners, days=30, seed=5)
    added = loader.add_live(200, owner_ids=owners)
    assert added["live"] == TaskQueue.objects.filter(status__in=["pending", "running"]).count() == 300
    now = timezone.now()
    assert not TaskQueue.objects.runnable(now).exists()
    assert not TaskQueue.objects.filter(status="running", lease_expires_at__lt=now + timedelta(days=1)).exists()
    _assert_counters_equal_a_rebuild()
