"""Bulk actions by filter: validation, batches by keyset, each action, resuming, counters in step."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import bulk, transitions
from tasks.models import (
    BulkAction,
    BulkActionState,
    FailureGroup,
    TaskQueue,
    TaskStatus,
    TaskStatusCount,
)
from tasks.tests.conftest import enqueue_many, fail_for_good

pytestmark = pytest.mark.django_db


def create(by, action: str, params: dict | None = None, **filters) -> BulkAction:
    return bulk.bulk_action_create(action=action, filters=filters, params=params or {}, by=by)


def failed_count(owner) -> int:
    row = TaskStatusCount.objects.filter(owner=owner, status=TaskStatus.FAILED).first()
    return row.count if row else 0


@pytest.mark.parametrize(
    ("action", "filters", "params", "code"),
    [
        ("retry", {"status": "failed"}, {}, "filter_not_indexed"),
        ("retry", {"queue": "default", "task_type": "echo"}, {}, "filter_not_indexed"),
        ("retry", {"created_after": "2026-01-01T00:00:00Z"}, {}, "filter_not_indexed"),
        ("explode", {"status": "pending"}, {}, "invalid_action"),
        ("retry", {"status": "pending", "colour": "red"}, {}, "unknown_filter"),
        ("retry", {"status": "sleeping"}, {}, "invalid_filter"),
        ("retry", {"status": "pending", "queue": "nope"}, {}, "unknown_queue"),
        ("retry", {"owner": "nobody"}, {}, "unknown_owner"),
        ("retry", {"failure_group": "f" * 40}, {}, "unknown_failure_group"),
        ("retry", {"status": "pending", "created_before": "yesterday"}, {}, "invalid_filter"),
        ("priority", {"status": "pending"}, {"priority": "101"}, "invalid_priority"),
        ("priority", {"status": "pending"}, {"priority": "high"}, "invalid_priority"),
        ("move", {"status": "pending"}, {"target_queue": "nope"}, "unknown_target_queue"),
    ],
)
def test_bad_filters_and_parameters_are_refused_with_a_stable_code(staff, default_queue, action, filters, params, code):
    with pytest.raises(bulk.BulkActionInvalid) as refused:
        create(staff, action, params, **filters)
    assert refused.value.code == code
    assert not BulkAction.objects.exists()


def test_retry_of_an_error_group_runs_in_batches_and_keeps_counts_in_step(staff, alice, default_queue):
    tasks = fail_for_good(alice, 25, error="E: user {i} missing")
    other = fail_for_good(alice, 3, error="Other: disk full")
    group = FailureGroup.objects.get(pk=tasks[0].failure_group_id)
    action = create(staff, "retry", failure_group=group.key)
    assert (action.state, action.created_by, action.filters) == (
        BulkActionState.QUEUED,
        staff,
        {"failure_group": group.key},
    )

    done = bulk.bulk_action_run(action.pk, batch_size=10, max_batches=10)

    assert (done.state, done.scanned, done.changed, done.batches) == (BulkActionState.DONE, 25, 25, 3)
    assert done.cursor == tasks[-1].pk and done.finished_at is not None
    retried = TaskQueue.objects.filter(pk__in=[t.pk for t in tasks], status=TaskStatus.PENDING, attempts=0)
    assert retried.filter(failure_group=None, error="").count() == 25
    assert TaskQueue.objects.filter(pk__in=[t.pk for t in other], status=TaskStatus.FAILED).count() == 3
    group.refresh_from_db()
    assert group.count == 0
    assert failed_count(alice) == 3


def test_the_runner_sleeps_after_each_batch_but_the_last_as_long_as_the_batch_took_times_the_coefficient(
    staff, alice, default_queue, monkeypatch
):
    tasks = fail_for_good(alice, 7, error="E: user {i} missing")
    action = create(staff, "retry", failure_group=tasks[0].failure_group_id)
    clock = iter(range(0, 1000, 2))  # every look at the clock is 2 s after the one before
    monkeypatch.setattr(bulk.time, "monotonic", lambda: next(clock))
    slept: list[float] = []
    monkeypatch.setattr(bulk.time, "sleep", slept.append)

    done = bulk.bulk_action_run(action.pk, batch_size=3, sleep_coef=1.5)

    assert (done.state, done.batches, done.changed) == (BulkActionState.DONE, 3, 7)
    assert slept == [3.0, 3.0]  # batches of "2 s" each, × 1.5; none after the last


def test_run_bulk_actions_refuses_a_negative_sleep_coefficient():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--sleep-coef"):
        call_command("run_bulk_actions", "--once", "--sleep-coef", "-1")


def test_residual_filters_narrow_each_batch(staff, alice, bob, default_queue):
    old = fail_for_good(alice, 4, error="E: x", task_type="echo")
    TaskQueue.objects.filter(pk__in=[t.pk for t in old[:2]]).update(created_at=timezone.now() - timedelta(days=3))
    fail_for_good(alice, 2, error="E: x", task_type="sleep")
    action = create(
        staff, "retry", owner="alice", status="failed", task_type="echo",
        created_after=(timezone.now() - timedelta(days=1)).isoformat(),
    )  # fmt: skip
    done = bulk.bulk_action_run(action.pk, batch_size=2)
    assert (done.scanned, done.changed) == (6, 2)
    assert set(TaskQueue.objects.filter(status=TaskStatus.PENDING).values_list("pk", flat=True)) == {
        t.pk for t in old[2:]
    }


def test_tasks_created_after_the_action_are_left_alone(staff, alice, default_queue):
    before = enqueue_many(alice, 3)
    action = create(staff, "cancel", status="pending", queue="default")
    later = enqueue_many(alice, 2)
    done = bulk.bulk_action_run(action.pk)
    assert done.changed == 3
    assert set(TaskQueue.objects.filter(status=TaskStatus.CANCELLED).values_list("pk", flat=True)) == {
        t.pk for t in before
    }
    assert TaskQueue.objects.filter(pk__in=[t.pk for t in later], status=TaskStatus.PENDING).count() == 2


def test_cancel_cancels_pending_and_asks_running_to_stop(staff, alice, default_queue):
    pending = enqueue_many(alice, 3)
    running = enqueue_many(alice, 1, status=TaskStatus.RUNNING, claimed_by="w", started_at=timezone.now())
    done = bulk.bulk_action_run(create(staff, "cancel", owner="alice").pk)
    assert done.changed == 4
    cancelled = TaskQueue.objects.filter(pk__in=[t.pk for t in pending], status=TaskStatus.CANCELLED)
    assert list(cancelled.values_list("cancel_requested", flat=True)) == [True] * 3  # by request, as one cancel
    stored = TaskQueue.objects.get(pk=running[0].pk)
    assert (stored.status, stored.cancel_requested) == (TaskStatus.RUNNING, True)
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.CANCELLED).count == 3


def test_delete_removes_a_group_s_tasks_and_uncounts_them(staff, alice, default_queue):
    tasks = fail_for_good(alice, 5, error="E: x")
    done = bulk.bulk_action_run(create(staff, "delete", failure_group=tasks[0].failure_group_id).pk, batch_size=2)
    assert (done.changed, done.batches) == (5, 3)
    assert not TaskQueue.objects.exists()
    assert FailureGroup.objects.get().count == 0
    assert failed_count(alice) == 0


def test_change_priority_of_pending_tasks_in_a_queue(staff, alice, default_queue, emails_queue):
    here = enqueue_many(alice, 3)
    there = enqueue_many(alice, 2, queue=emails_queue)
    done = bulk.bulk_action_run(create(staff, "priority", {"priority": "7"}, status="pending", queue="default").pk)
    assert done.changed == 3
    assert set(TaskQueue.objects.filter(priority=7).values_list("pk", flat=True)) == {t.pk for t in here}
    assert TaskQueue.objects.filter(pk__in=[t.pk for t in there], priority=0).count() == 2


def test_move_pending_tasks_to_another_queue_leaving_a_unique_key_clash(staff, alice, default_queue, emails_queue):
    moving = enqueue_many(alice, 3)
    keyed = enqueue_many(alice, 1, unique_key="k1")[0]
    enqueue_many(alice, 1, queue=emails_queue, unique_key="k1")  # holds k1 in the target queue
    done = bulk.bulk_action_run(create(staff, "move", {"target_queue": "emails"}, status="pending", queue="default").pk)
    assert done.changed == 3
    assert set(TaskQueue.objects.filter(queue=emails_queue, unique_key=None).values_list("pk", flat=True)) == {
        t.pk for t in moving
    }
    assert TaskQueue.objects.get(pk=keyed.pk).queue_id == default_queue.pk


class Crash(BaseException):
    """A process dying mid-batch: nothing of the batch's transaction stays."""


def test_a_crash_mid_batch_resumes_from_the_cursor_changing_each_task_once(staff, alice, default_queue, monkeypatch):
    tasks = fail_for_good(alice, 9, error="E: x")
    action = create(staff, "retry", failure_group=tasks[0].failure_group_id)
    first = bulk.bulk_action_run(action.pk, batch_size=3, max_batches=1)
    assert (first.state, first.changed, first.cursor) == (BulkActionState.RUNNING, 3, tasks[2].pk)

    real = transitions.reopen_many

    def reopen_then_die(queryset):
        real(queryset)
        raise Crash

    monkeypatch.setattr(transitions, "reopen_many", reopen_then_die)
    with pytest.raises(Crash):
        bulk.bulk_action_run(action.pk, batch_size=3)
    monkeypatch.setattr(transitions, "reopen_many", real)
    after_crash = BulkAction.objects.get(pk=action.pk)
    assert (after_crash.state, after_crash.changed, after_crash.cursor) == (BulkActionState.RUNNING, 3, tasks[2].pk)
    assert TaskQueue.objects.filter(status=TaskStatus.PENDING).count() == 3, "the crashed batch was rolled back"

    assert bulk.bulk_actions_run_pending(batch_size=3) == 1
    done = BulkAction.objects.get(pk=action.pk)
    assert (done.state, done.changed, done.scanned) == (BulkActionState.DONE, 9, 9)
    assert FailureGroup.objects.get().count == 0
    assert failed_count(alice) == 0


def test_an_action_that_breaks_is_recorded_failed(staff, alice, default_queue, monkeypatch):
    enqueue_many(alice, 2)
    action = create(staff, "cancel", status="pending")

    def broken(queryset):
        raise ValueError("no")

    monkeypatch.setattr(transitions, "cancel_many", broken)
    with pytest.raises(ValueError):
        bulk.bulk_action_run(action.pk)
    stored = BulkAction.objects.get(pk=action.pk)
    assert (stored.state, stored.error) == (BulkActionState.FAILED, "no")
    assert TaskQueue.objects.filter(status=TaskStatus.PENDING).count() == 2


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)  # ANALYZE TABLE commits
@pytest.mark.parametrize(
    ("filters", "index", "sorted_by_index"),
    [
        ({"failure_group": None}, "task_failure_group_idx", True),
        ({"owner": "alice", "status": "failed"}, "task_owner_status_idx", True),
        ({"owner": "alice"}, "task_owner_id_idx", True),
        ({"status": "pending"}, "task_claim_idx", False),  # the live set, sorted: O(live set)
    ],
)
def test_each_anchor_reads_its_index_never_the_table(alice, bob, default_queue, filters, index, sorted_by_index):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    failed = fail_for_good(alice, 40, error="E: x")
    fail_for_good(bob, 40, error="F: y")
    enqueue_many(alice, 50)
    enqueue_many(bob, 50)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE task_queue")
    if "failure_group" in filters:
        filters = {"failure_group": failed[0].failure_group_id}
    with CaptureQueriesContext(connection) as queries:
        ids = bulk._anchor_ids(filters, 0, 10**9, 10)
    assert len(ids) == 10
    sql = next(q["sql"] for q in queries.captured_queries if "task_queue" in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql)
        columns = [column[0].lower() for column in cursor.description]
        (plan,) = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    assert plan["key"] == index, plan
    assert plan["type"] not in ("ALL", "index"), plan
    assert ("filesort" in str(plan["extra"]).lower()) is not sorted_by_index, plan
