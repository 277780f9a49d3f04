"""TaskQueue's worker transitions: each saves only while the claim still holds the task."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.models import TaskQueue, TaskStatus
from tasks.tests.conftest import enqueue_many

pytestmark = pytest.mark.django_db

ME = "host:1:aaaaaa"


@pytest.fixture
def running(alice, default_queue) -> TaskQueue:
    task = enqueue_many(alice, max_attempts=3)[0]
    now = timezone.now()
    assert task.mark_running(worker_id=ME, now=now, lease_expires_at=now + timedelta(minutes=1))
    return task


def stored(task: TaskQueue) -> TaskQueue:
    return TaskQueue.objects.get(pk=task.pk)


def test_mark_running_claims_only_a_pending_task(running):
    row = stored(running)
    assert (row.status, row.attempts, row.claimed_by) == (TaskStatus.RUNNING, 1, ME)
    now = timezone.now()
    assert running.mark_running(worker_id="other", now=now, lease_expires_at=now) is False
    assert stored(running).claimed_by == ME


def test_mark_succeeded_saves_the_result(running):
    assert running.mark_succeeded(result={"a": [1, 2]}, now=timezone.now())
    row = stored(running)
    assert (row.status, row.result, row.progress, row.lease_expires_at) == (
        TaskStatus.SUCCEEDED,
        {"a": [1, 2]},
        100,
        None,
    )


def test_schedule_retry_keeps_the_attempt_and_frees_the_claim(running):
    later = timezone.now() + timedelta(minutes=5)
    assert running.schedule_retry(error="boom", run_at=later)
    row = stored(running)
    assert (row.status, row.attempts, row.claimed_by, row.run_at, row.error) == ("pending", 1, "", later, "boom")


def test_release_gives_the_attempt_back(running):
    assert running.release()
    row = stored(running)
    assert (row.status, row.attempts, row.claimed_by, row.started_at) == ("pending", 0, "", None)


@pytest.mark.parametrize(
    "transition",
    [
        lambda t: t.mark_succeeded(result=1, now=timezone.now()),
        lambda t: t.mark_failed(error="x", now=timezone.now()),
        lambda t: t.mark_cancelled(message="x", now=timezone.now()),
        lambda t: t.schedule_retry(error="x", run_at=timezone.now()),
        lambda t: t.release(),
    ],
)
def test_a_transition_changes_nothing_once_the_claim_is_lost(running, transition):
    TaskQueue.objects.filter(pk=running.pk).update(claimed_by="someone-else", attempts=2)
    assert transition(running) is False
    row = stored(running)
    assert (row.status, row.claimed_by, row.attempts) == (TaskStatus.RUNNING, "someone-else", 2)


def test_save_false_only_changes_the_instance(running):
    running.mark_succeeded(result=1, now=timezone.now(), save=False)
    assert running.status == TaskStatus.SUCCEEDED
    assert stored(running).status == TaskStatus.RUNNING
