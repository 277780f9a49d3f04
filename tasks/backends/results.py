"""A `task_queue` row as Django's TaskResult, and a dotted path resolved to a Task (or refused)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils.dateparse import parse_datetime
from django.utils.module_loading import import_string

from tasks.backends.compat import Task, TaskError, TaskResult, TaskResultStatus
from tasks.models import TaskStatus

if TYPE_CHECKING:
    from tasks.models import TaskQueue

CANCELLED_EXCEPTION = "tasks.errors.TaskCancelled"
STATUSES = {
    TaskStatus.PENDING: TaskResultStatus.READY,
    TaskStatus.RUNNING: TaskResultStatus.RUNNING,
    TaskStatus.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    TaskStatus.FAILED: TaskResultStatus.FAILED,
    # Django has no "cancelled": it reads as failed, with an error naming the cancellation.
    TaskStatus.CANCELLED: TaskResultStatus.FAILED,
}


class NotATask(TypeError):
    """A Django task's dotted path names something that is not a Task: the worker refuses to run it."""


def resolve(path: str) -> Task:
    """Return the Task at dotted `path`; raise ImportError if it is gone, NotATask if it is not a Task.

    The object is called only if it is a `Task` (as django-tasks-db checks): a row can never
    make the worker call an arbitrary function.
    """
    obj = import_string(path)
    if not isinstance(obj, Task):
        raise NotATask(f"{path!r} is a {type(obj).__name__}, not a Task: refused to run it")
    return obj


def task_result(row: TaskQueue, *, alias: str, queue_name: str) -> TaskResult:
    """Return the TaskResult a Django task's row stands for, as its backend `alias` reports it."""
    errors = list(row.attempt_errors or [])
    worker_ids = [entry.get("worker", "") for entry in errors]
    # The attempt under way (or the last one, if it did not fail) is the current claim's.
    if row.attempts > len(errors) and row.claimed_by:
        worker_ids.append(row.claimed_by)
    task_errors = [TaskError(exception_class_path=_exception(e), traceback=e.get("error", "")) for e in errors]
    if row.status == TaskStatus.CANCELLED:
        why = row.progress_message or "cancelled"
        task_errors.append(TaskError(exception_class_path=CANCELLED_EXCEPTION, traceback=f"TaskCancelled: {why}"))
    first_start = _parse(errors[0].get("started_at")) if errors else None
    return build_result(
        task=resolve(row.task_type),
        pk=row.pk,
        alias=alias,
        status=STATUSES[row.status],
        queue_name=queue_name,
        priority=row.priority,
        max_attempts=row.max_attempts,
        timeout=row.timeout_seconds,
        created_at=row.created_at,
        run_at=row.run_at,
        started_at=first_start or row.started_at,
        last_attempted_at=row.started_at,
        finished_at=row.finished_at,
        payload=row.payload,
        errors=task_errors,
        worker_ids=worker_ids,
        return_value=row.result,
    )


def build_result(
    *,
    task: Task,
    pk: int,
    alias: str,
    status: str,
    queue_name: str,
    priority: int,
    created_at: datetime | None,
    run_at: datetime | None,
    payload: dict[str, Any],
    max_attempts: int | None = None,
    timeout: int | None = None,
    started_at: datetime | None = None,
    last_attempted_at: datetime | None = None,
    finished_at: datetime | None = None,
    errors: list[TaskError] | None = None,
    worker_ids: list[str] | None = None,
    return_value: Any = None,
    as_enqueued: bool = False,
) -> TaskResult:
    """Return a TaskResult of `task` with the row's details (the Task as the row ran it).

    `task` is the Task at the row's path, changed to match the row; with `as_enqueued` it is the
    very Task just enqueued, used as is (enqueue is the hot path: no copy, no second validation).
    """
    if not as_enqueued:
        changes: dict[str, Any] = {"priority": priority, "queue_name": queue_name or task.queue_name, "backend": alias}
        # A run_at later than the enqueue is a deferral (or a retry's back-off): Django's run_after.
        if run_at is not None and created_at is not None and run_at > created_at:
            changes["run_after"] = run_at
        if hasattr(task, "max_attempts"):  # a TaskHubTask
            changes.update(max_attempts=max_attempts, timeout=timeout)
        task = task.using(**changes)
    result = TaskResult(
        task=task,
        id=str(pk),
        status=status,
        enqueued_at=created_at,
        started_at=started_at,
        last_attempted_at=last_attempted_at,
        finished_at=finished_at,
        args=payload.get("args", []),
        kwargs=payload.get("kwargs", {}),
        backend=alias,
        errors=errors or [],
        worker_ids=worker_ids or [],
    )
    object.__setattr__(result, "_return_value", return_value)
    return result


def _exception(entry: dict[str, Any]) -> str:
    # Attempts that failed before exception paths were recorded, or without an exception.
    return entry.get("exception") or "builtins.Exception"


def _parse(value: Any) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None
