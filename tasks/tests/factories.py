"""Small builders for tasks in tests."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from tasks.models import QueueConfig, TaskQueue


def make_task(owner, *, queue: QueueConfig | None = None, task_type: str = "echo", **fields) -> TaskQueue:
    """Insert a task row directly (bypassing the enqueue service) for set-up."""
    queue = queue or QueueConfig.objects.get_or_create(name="default")[0]
    return TaskQueue.objects.create(owner=owner, queue=queue, task_type=task_type, **fields)


def finished_fields(status: str, *, created: datetime | None = None, wait: float = 1.0, run: float = 2.0) -> dict:
    """Return the fields of a task that started `wait` s after creation and ran `run` s."""
    from datetime import timedelta

    created = created or timezone.now() - timedelta(seconds=wait + run + 1)
    started = created + timedelta(seconds=wait)
    return {
        "status": status,
        "created_at": created,
        "started_at": started,
        "finished_at": started + timedelta(seconds=run),
    }
