"""A worker's transitions: each writes only while its claim (status, worker, attempt) still holds the task."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import transitions
from tasks.models import QueueConfig, TaskQueue, TaskStatus
from tasks.outcomes import Outcome, OutcomeKind
from tasks.tests.conftest import enqueue_many

pytestmark = pytest.mark.django_db

ME = "host:1:aaaaaa"


def claim_all(worker_id: str) -> list[TaskQueue]:
    return transitions.claim(worker_id=worker_id, queues=transitions.runnable_queues(), limit=10).tasks


@pytest.fixture
def running(alice, default_queue) -> TaskQueue:
    task = enqueue_many(alice, max_attempts=3)[0]
    (claimed,) = claim_all(ME)
    assert claimed.pk == task.pk
    return claimed


def stored(task: TaskQueue) -> TaskQueue:
    return TaskQueue.objects.get(pk=task.pk)


def record(task: TaskQueue, kind: OutcomeKind, **fields) -> list[transitions.Recorded]:
    queues = {task.queue_id: QueueConfig.objects.get(pk=task.queue_id)}
    return transitions.record_outcomes([(task, Outcome(task.pk, kind, **fields))], worker_id=ME, queues=queues)


def test_a_claim_takes_only_a_pending_task(running):
    row = stored(running)
    assert (row.status, row.attempts, row.claimed_by) == (TaskStatus.RUNNING, 1, ME)
    assert claim_all("other") == []
    assert stored(running).claimed_by == ME


def test_success_saves_the_result(running):
    (recorded,) = record(running, OutcomeKind.SUCCEEDED, result={"a": [1, 2]})
    assert recorded.status == TaskStatus.SUCCEEDED
    row = stored(running)
    assert (row.status, row.result, row.progress, row.lease_expires_at) == (
        TaskStatus.SUCCEEDED,
        {"a": [1, 2]},
        100,
        None,
    )


def test_a_retry_later_keeps_the_attempt_and_frees_the_claim(running):
    before = timezone.now()
    record(running, OutcomeKind.RETRYABLE, error="boom")
    row = stored(running)
    assert (row.status, row.attempts, row.claimed_by, row.error) == ("pending", 1, "", "boom")
    # The default queue's back-off base is 10 s: the first retry waits between 5 and 10 s.
    assert before + timedelta(seconds=5) <= row.run_at <= timezone.now() + timedelta(seconds=10)


def test_release_gives_the_attempt_back(running):
    assert transitions.release([running]) == 1
    row = stored(running)
    assert (row.status, row.attempts, row.claimed_by, row.started_at) == ("pending", 0, "", None)


@pytest.mark.parametrize(
    "transition",
    [
        lambda t: record(t, OutcomeKind.SUCCEEDED, result=1),
        lambda t: record(t, OutcomeKind.PERMANENT, error="x"),
        lambda t: record(t, OutcomeKind.CANCELLED, error="x"),
        lambda t: record(t, OutcomeKind.RETRYABLE, error="x"),
        lambda t: transitions.release([t]),
        lambda t: transitions.write_progress(worker_id=ME, reports={t.pk: (50, "half")}),
    ],
)
def test_a_transition_changes_nothing_once_the_claim_is_lost(running, transition):
    TaskQueue.objects.filter(pk=running.pk).update(claimed_by="someone-else", attempts=2)
    assert not transition(running)
    row = stored(running)
    assert (row.status, row.claimed_by, row.attempts, row.progress) == (TaskStatus.RUNNING, "someone-else", 2, 0)


def test_a_transition_changes_nothing_for_an_earlier_attempt_of_the_same_worker(running):
    TaskQueue.objects.filter(pk=running.pk).update(attempts=2)  # taken back and claimed again by ME
    assert record(running, OutcomeKind.PERMANENT, error="late") == []
    assert stored(running).status == TaskStatus.RUNNING
