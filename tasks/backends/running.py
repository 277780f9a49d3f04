"""The worker child's side of a Django task: resolve its path, run it, and decide its retry.

Called by `tasks.worker.child` for rows of kind "django". The path is imported and called only
if it names a Task; anything else fails the task at once (no retry) with a clear error, and the
child runs on. A coroutine function runs through Django's `Task.call` (a fresh event loop per
task; the ORM calls it makes through `sync_to_async` run on the child's own thread and
connection, which the worker cleans after every task).

A failed attempt's retry is decided here, where the exception is: the task's `backoff`
(or OPTIONS["BACKOFF"]) returns seconds until the retry, or None for no retry at all.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from tasks.backends.compat import TaskContext, TaskError, TaskResult, TaskResultStatus, task_finished, task_started
from tasks.backends.results import NotATask, build_result, resolve
from tasks.errors import TaskCancelled
from tasks.outcomes import Outcome, OutcomeKind, check_result, exception_path, format_error

logger = logging.getLogger("taskhub.worker")


def run_django_task(spec: Any, *, worker_id: str) -> Outcome:
    """Run the Django task of `spec` (a `tasks.worker.messages.TaskSpec`); return its outcome."""
    task_id = spec.task_id
    try:
        task = resolve(spec.task_type)
    except (ImportError, NotATask) as exc:
        why = "can no longer be imported" if isinstance(exc, ImportError) else "is not a Task"
        error = f"{type(exc).__name__}: the task's path {spec.task_type!r} {why}: {exc}"
        return Outcome(task_id, OutcomeKind.PERMANENT, error=error, exception=exception_path(exc))
    try:
        backend = task.get_backend()
        result = _running_result(task, spec, worker_id)
    except Exception as exc:  # its backend is gone from settings, or the database failed: retried
        error = f"could not prepare the task to run: {format_error(exc)}"
        return Outcome(task_id, OutcomeKind.RETRYABLE, error=error, exception=exception_path(exc))
    _send(task_started, backend, result)
    args = list(spec.payload.get("args", []))
    kwargs = dict(spec.payload.get("kwargs", {}))
    try:
        if task.takes_context:
            args.insert(0, TaskContext(task_result=result))
        value = task.call(*args, **kwargs)
    except TaskCancelled as exc:
        return Outcome(task_id, OutcomeKind.CANCELLED, error=str(exc) or "cancelled")
    except Exception as exc:
        return _failed(task, backend, result, exc)
    problem = check_result(value)
    if problem:
        return Outcome(task_id, OutcomeKind.PERMANENT, error=problem)
    _finish(result, TaskResultStatus.SUCCESSFUL, return_value=value)
    _send(task_finished, backend, result)
    return Outcome(task_id, OutcomeKind.SUCCEEDED, result=value)


def _running_result(task: Any, spec: Any, worker_id: str) -> TaskResult:
    """Return the TaskResult of the attempt under way.

    A first attempt's is built from what the claim read (no database round trip); a retry's
    is read from the database, which holds the earlier attempts' errors and workers.
    """
    details = spec.details or {}
    if spec.attempt > 1:
        result = task.get_backend().get_result(str(spec.task_id))
        object.__setattr__(result, "status", TaskResultStatus.RUNNING)
        return result
    return build_result(
        task=task,
        pk=spec.task_id,
        alias=task.backend,
        status=TaskResultStatus.RUNNING,
        queue_name=details.get("queue", ""),
        priority=details.get("priority", task.priority),
        created_at=details.get("created_at"),
        run_at=details.get("run_at"),
        started_at=details.get("started_at"),
        last_attempted_at=details.get("started_at"),
        payload=spec.payload,
        worker_ids=[worker_id],
    )


def _failed(task: Any, backend: Any, result: TaskResult, exc: Exception) -> Outcome:
    error = format_error(exc)
    path = exception_path(exc)
    result.errors.append(TaskError(exception_class_path=path, traceback=error))
    kind, delay = OutcomeKind.RETRYABLE, None
    backoff = getattr(task, "backoff", None) or getattr(backend, "backoff", None)
    if backoff is not None:
        try:
            delay = backoff(exc, result)
        except Exception:
            logger.exception("task %s: its backoff raised; the queue's backoff applies", result.id)
        else:
            if delay is None:
                kind = OutcomeKind.PERMANENT  # the backoff says: no retry
            elif isinstance(delay, bool) or not isinstance(delay, int | float) or delay != delay:
                logger.error(
                    "task %s: its backoff returned %r, not seconds or None; the queue's applies", result.id, delay
                )
                delay = None
            else:
                delay = max(float(delay), 0.0)
    _finish(result, TaskResultStatus.FAILED)
    _send(task_finished, backend, result)
    return Outcome(int(result.id), kind, error=error, exception=path, retry_delay=delay)


def _finish(result: TaskResult, status: str, *, return_value: Any = None) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "_return_value", return_value)


def _send(signal: Any, backend: Any, result: TaskResult) -> None:
    """Send a task signal; a receiver's error is logged, never the task's outcome."""
    for _receiver, response in signal.send_robust(type(backend), task_result=result):
        if isinstance(response, Exception):
            logger.error("task %s: a task signal receiver raised %r", result.id, response)
