"""The Task class of TaskHub's backend, with its per-task policy, and the rule for arguments."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tasks.backends.compat import InvalidTask, Task

# Backoff(exception, task_result) -> seconds until the retry, or None for no retry
# (the signature proposed in django/new-features#142).
Backoff = Callable[[BaseException, Any], "float | None"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskHubTask(Task):
    """A Django Task with TaskHub's per-task policy; unset fields fall back to OPTIONS, then the queue.

    `@task(max_attempts=5, backoff=my_backoff, timeout=60)` sets them (Django forwards extra
    keyword arguments of `@task` to the backend's `task_class`); `.using(max_attempts=...,
    timeout=...)` changes them per call. A backoff is part of the task's definition: the worker
    reads it from the task at its dotted path, so `.using()` cannot change it.
    """

    max_attempts: int | None = None
    backoff: Backoff | None = None
    timeout: int | None = None  # seconds; also the lease the worker holds the task under
    # One active task per key (owner, queue): `.using(unique_key=..., on_conflict="replace")`.
    unique_key: str | None = None
    on_conflict: str = "return"
    # At most the queue's per_key_concurrency tasks with this key run at once: `.using(concurrency_key=...)`.
    concurrency_key: str | None = None

    def using(
        self,
        *,
        max_attempts: int | None = None,
        timeout: int | None = None,
        unique_key: str | None = None,
        on_conflict: str | None = None,
        concurrency_key: str | None = None,
        **changes: Any,
    ) -> TaskHubTask:
        """Return a copy with Django's changes (priority, queue_name, run_after, backend) and TaskHub's."""
        # Task.using, not super(): a slots dataclass breaks zero-argument super() before Python 3.14.
        task = Task.using(self, **changes)
        policy = {
            name: value
            for name, value in (
                ("max_attempts", max_attempts),
                ("timeout", timeout),
                ("unique_key", unique_key),
                ("on_conflict", on_conflict),
                ("concurrency_key", concurrency_key),
            )
            if value
        }
        return replace(task, **policy) if policy else task


class InvalidTaskArguments(InvalidTask, TypeError):
    """A task's arguments would not come back the same from JSON (Django's rule for arguments)."""


def check_arguments(args: Any, kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """Return `args` and `kwargs` as stored, or raise InvalidTaskArguments if JSON would change them.

    Django asks that arguments round-trip through JSON exactly. Refused here, at enqueue, rather
    than failing in the worker: what JSON cannot hold (bytes, objects), non-finite floats,
    tuples (they come back as lists) and non-string dict keys (they come back as strings).
    """
    stored = {"args": list(args), "kwargs": dict(kwargs)}
    try:
        text = json.dumps(stored, allow_nan=False)
    except ValueError as exc:
        raise InvalidTaskArguments(f"Task arguments must be JSON: {_non_finite(stored) or exc}") from exc
    except TypeError as exc:
        raise InvalidTaskArguments(f"Task arguments must be JSON: {exc}") from exc
    if json.loads(text) != stored:
        raise InvalidTaskArguments(
            "Task arguments must come back the same from JSON: "
            f"{_changed(stored, json.loads(text)) or 'they would not'}"
        )
    return stored["args"], stored["kwargs"]


def _non_finite(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
    return next((found for child in children if (found := _non_finite(child))), None)


def _changed(value: Any, decoded: Any) -> str | None:
    """Name the first part of `value` that JSON turns into something else."""
    if isinstance(value, tuple):
        return f"the tuple {value!r} would come back as a list"
    if isinstance(value, dict):
        for key, child in value.items():
            if not isinstance(key, str):
                return f"the dict key {key!r} would come back as the string {json.dumps({key: 0})[1:-4]}"
            if found := _changed(child, decoded.get(key) if isinstance(decoded, dict) else None):
                return found
    if isinstance(value, list) and isinstance(decoded, list):
        return next((found for a, b in zip(value, decoded, strict=False) if (found := _changed(a, b))), None)
    return None
