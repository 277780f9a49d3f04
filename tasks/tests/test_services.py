"""Cancel and retry: allowed transitions happen, the others conflict and change nothing."""

from __future__ import annotations

import pytest

from tasks import services
from tasks.exceptions import TaskStateConflict
from tasks.models import TaskStatus, TaskStatusCount
from tasks.tests.factories import finished_fields, make_task

pytestmark = pytest.mark.django_db


def test_cancelling_a_pending_task_cancels_it_at_once(alice):
    task = make_task(alice)
    assert services.task_cancel(task=task, by=alice) is services.CancelOutcome.CANCELLED
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    assert task.finished_at is not None
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.CANCELLED).count == 1


def test_cancelling_a_running_task_requests_it(alice):
    task = make_task(alice, status=TaskStatus.RUNNING)
    assert services.task_cancel(task=task, by=alice) is services.CancelOutcome.CANCEL_REQUESTED
    task.refresh_from_db()
    assert (task.status, task.cancel_requested) == (TaskStatus.RUNNING, True)


@pytest.mark.parametrize("status", [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_cancelling_a_finished_task_conflicts(alice, status):
    task = make_task(alice, **finished_fields(status))
    with pytest.raises(TaskStateConflict):
        services.task_cancel(task=task, by=alice)
    task.refresh_from_db()
    assert task.status == status


@pytest.mark.parametrize("status", [TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_retry_puts_a_failed_or_cancelled_task_back_with_attempts_reset(alice, status):
    task = make_task(alice, attempts=3, error="boom", **finished_fields(status))
    TaskStatusCount.objects.create(owner=alice, queue=task.queue, status=status, count=1)
    services.task_retry(task=task, by=alice)
    task.refresh_from_db()
    assert (task.status, task.attempts, task.error, task.finished_at) == (TaskStatus.PENDING, 0, "", None)
    assert TaskStatusCount.objects.get(owner=alice, status=status).count == 0


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED])
def test_retry_of_other_states_conflicts(alice, status):
    task = make_task(alice, status=status)
    with pytest.raises(TaskStateConflict):
        services.task_retry(task=task, by=alice)
    task.refresh_from_db()
    assert task.status == status
