"""Failure groups: fingerprints, and the group counts kept in step by the transitions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import failure_groups, transitions
from tasks.models import FailureGroup, TaskQueue, TaskStatus
from tasks.outcomes import Outcome, OutcomeKind
from tasks.retention import tasks_purge_finished
from tasks.tests.conftest import enqueue_many
from tasks.tests.conftest import fail_for_good as fail

pytestmark = pytest.mark.django_db
ME = "host:1:aaaaaa"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("NotFound: user 42 not found", "NotFound: user 7 not found"),
        ("KeyError: 'alpha'", 'KeyError: "beta"'),
        (
            "Err: order 3f2a9c1e-0b7d-4c55-9f0e-1a2b3c4d5e6f failed",
            "Err: order 00000000-1111-2222-3333-444444444444 failed",
        ),
        ("Err: object at 0x7f3a2b1c9d80", "Err: object at 0x55d1e2f3a4b0"),
        ("Err: sha deadbeef1234 missing", "Err: sha cafe5678babe missing"),
        ("Timeout after 3.5 s\n\nTraceback (most recent call last):\n  line 1", "Timeout after 10 s"),
    ],
)
def test_what_varies_between_occurrences_is_stripped_from_the_fingerprint(a, b):
    assert failure_groups.fingerprint(a) == failure_groups.fingerprint(b)
    assert failure_groups.group_key("t", "E", a) == failure_groups.group_key("t", "E", b)


def test_different_messages_types_and_classes_are_different_groups():
    key = failure_groups.group_key("echo", "E", "Err: user not found")
    assert key != failure_groups.group_key("echo", "E", "Err: user disabled")
    assert key != failure_groups.group_key("sleep", "E", "Err: user not found")
    assert key != failure_groups.group_key("echo", "F", "Err: user not found")


def test_a_permanent_failure_joins_its_group_in_the_same_transition(alice, default_queue):
    tasks = fail(alice, 3, error="NotFound: user {i} not found\n\nTraceback (most recent call last):\n  File x")
    (group,) = FailureGroup.objects.all()
    assert {task.failure_group_id for task in tasks} == {group.key}
    assert (group.task_type, group.exception, group.count) == ("echo", "app.errors.NotFound", 3)
    assert group.fingerprint == "NotFound: user <n> not found"
    assert "Traceback" in group.example_error and group.example_task_id in {task.pk for task in tasks}
    assert group.first_seen <= group.last_seen

    later = fail(alice, 2, error="NotFound: user {i} not found")
    group.refresh_from_db()
    assert group.count == 5
    assert later[0].failure_group_id == group.key


def test_a_failure_that_will_be_retried_joins_no_group(alice, default_queue):
    task = enqueue_many(alice, max_attempts=3)[0]
    (claimed,) = transitions.claim(worker_id=ME, queues=transitions.runnable_queues(), limit=1).tasks
    transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.RETRYABLE, error="E: x"))], worker_id=ME, queues={}
    )
    assert TaskQueue.objects.get(pk=task.pk).failure_group_id is None
    assert not FailureGroup.objects.exists()


def test_a_worker_lost_for_good_joins_the_worker_lost_group(alice, default_queue):
    now = timezone.now()
    expired = now - timedelta(seconds=1)
    task = enqueue_many(
        alice, status=TaskStatus.RUNNING, claimed_by="gone", lease_expires_at=expired, started_at=expired,
        attempts=1, max_attempts=1,
    )[0]  # fmt: skip
    transitions.recover_expired_leases(now=now)
    stored = TaskQueue.objects.get(pk=task.pk)
    group = FailureGroup.objects.get()
    assert (stored.status, stored.failure_group_id) == (TaskStatus.FAILED, group.key)
    assert (group.exception, group.count) == (transitions.WORKER_LOST_EXCEPTION, 1)


def test_retry_delete_and_purge_take_tasks_out_of_the_count_and_history_stays(alice, default_queue):
    a, b, c, d = fail(alice, 4, error="E: thing {i} broke")
    group = FailureGroup.objects.get()
    first_seen, last_seen = group.first_seen, group.last_seen

    assert transitions.reopen(a)
    assert TaskQueue.objects.get(pk=a.pk).failure_group_id is None
    group.refresh_from_db()
    assert group.count == 3

    transitions.delete(TaskQueue.objects.filter(pk=b.pk))
    group.refresh_from_db()
    assert group.count == 2

    result = tasks_purge_finished(before=timezone.now() + timedelta(seconds=1))
    assert result.deleted == 2
    group.refresh_from_db()
    assert (group.count, group.first_seen, group.last_seen) == (0, first_seen, last_seen)

    # The retried task fails again: it is counted once more.
    transitions.claim(worker_id=ME, queues=transitions.runnable_queues(), limit=1)
    a = TaskQueue.objects.get(pk=a.pk)
    transitions.record_outcomes(
        [(a, Outcome(a.pk, OutcomeKind.PERMANENT, error="E: thing 9 broke", exception="app.errors.NotFound"))],
        worker_id=ME,
        queues={},
    )
    group.refresh_from_db()
    assert group.count == 1


def test_deleting_a_cancelled_or_succeeded_task_leaves_group_counts_alone(alice, default_queue):
    fail(alice, 1, error="E: x")
    other = enqueue_many(alice)[0]
    transitions.cancel(other)
    transitions.delete(TaskQueue.objects.filter(pk=other.pk))
    assert FailureGroup.objects.get().count == 1


@pytest.mark.django_db(transaction=True)
def test_group_writes_refuse_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError):
        failure_groups.record_left(["abc"])
