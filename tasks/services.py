"""Task writes: every change of a task's state goes through a function here."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from tasks import counters
from tasks.exceptions import TaskStateConflict
from tasks.models import QueueConfig, TaskQueue, TaskStatus

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.db.models import QuerySet


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"


def task_cancel(*, task: TaskQueue, by: AbstractBaseUser | None = None) -> CancelOutcome:
    """Cancel a pending task at once, or ask a running task's handler to stop.

    Each step is one conditional UPDATE, so a worker claiming the task at the same moment
    either sees it cancelled or the cancel lands as a request on the running task.
    """
    now = timezone.now()
    with transaction.atomic():
        cancelled = TaskQueue.objects.filter(pk=task.pk, status=TaskStatus.PENDING).update(
            status=TaskStatus.CANCELLED, finished_at=now, cancel_requested=True
        )
        if cancelled:
            task.refresh_from_db()
            counters.record_finished([task])
            return CancelOutcome.CANCELLED
        requested = TaskQueue.objects.filter(pk=task.pk, status=TaskStatus.RUNNING).update(cancel_requested=True)
    task.refresh_from_db()
    if requested:
        return CancelOutcome.CANCEL_REQUESTED
    raise TaskStateConflict(f"task {task.pk} is {task.status} and cannot be cancelled", status=task.status)


def task_retry(*, task: TaskQueue, by: AbstractBaseUser | None = None) -> TaskQueue:
    """Put a failed or cancelled task back to pending with its attempts reset."""
    with transaction.atomic():
        old_status = (
            TaskQueue.objects.select_for_update()
            .filter(pk=task.pk, status__in=(TaskStatus.FAILED, TaskStatus.CANCELLED))
            .values_list("status", flat=True)
            .first()
        )
        if old_status is None:
            task.refresh_from_db()
            raise TaskStateConflict(
                f"task {task.pk} is {task.status}; only failed or cancelled tasks can be retried", status=task.status
            )
        TaskQueue.objects.filter(pk=task.pk).update(
            status=TaskStatus.PENDING,
            attempts=0,
            run_at=timezone.now(),
            claimed_by="",
            lease_expires_at=None,
            progress=0,
            progress_message="",
            result=None,
            error="",
            cancel_requested=False,
            started_at=None,
            finished_at=None,
        )
        counters.record_reopened([(task.owner_id, task.queue_id, old_status)])
    task.refresh_from_db()
    return task


def queue_set_paused(*, queue: QueueConfig, paused: bool) -> QueueConfig:
    """Pause or resume a queue; workers stop or resume claiming from it."""
    QueueConfig.objects.filter(pk=queue.pk).update(is_paused=paused, updated_at=timezone.now())
    queue.refresh_from_db()
    return queue


def tasks_delete(*, queryset: QuerySet[TaskQueue]) -> int:
    """Delete tasks and uncount the finished ones; return how many were deleted."""
    with transaction.atomic():
        rows = list(queryset.select_for_update().values_list("pk", "owner_id", "queue_id", "status"))
        TaskQueue.objects.filter(pk__in=[pk for pk, *_ in rows]).delete()
        counters.record_deleted([(owner_id, queue_id, status) for _, owner_id, queue_id, status in rows])
    return len(rows)
