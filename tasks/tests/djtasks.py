"""Django tasks for the backend's tests only: imported by the tests and by the workers they start."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tasks.backends.compat import TaskContext, task


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task
def stamp() -> int:
    """Return when it ran (CLOCK_MONOTONIC is one clock for every process on the machine)."""
    return time.monotonic_ns()


@task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


def right_away(exception: BaseException, task_result: Any) -> float:
    return 0


def never(exception: BaseException, task_result: Any) -> None:
    return None


@task(takes_context=True, max_attempts=4, backoff=right_away)
def fail_twice(context: TaskContext, label: str) -> dict[str, Any]:
    if context.attempt <= 2:
        raise RuntimeError(f"{label}: attempt {context.attempt} fails")
    return {"attempt": context.attempt, "id": context.task_result.id, "workers": len(context.task_result.worker_ids)}


@task(max_attempts=3, backoff=right_away)
def always_fails() -> None:
    raise KeyError("always")


@task(max_attempts=5, backoff=never)
def gives_up() -> None:
    raise ConnectionError("no retry, says the backoff")


@task(takes_context=True)
def context_info(context: TaskContext) -> dict[str, Any]:
    result = context.task_result
    return {
        "attempt": context.attempt,
        "id": result.id,
        "status": str(result.status),
        "queue": result.task.queue_name,
        "priority": result.task.priority,
        "args": result.args,
    }


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@task(timeout=1, max_attempts=1)
def sleeps(seconds: float) -> str:
    time.sleep(seconds)
    return "woke up"


@task(takes_context=True, timeout=3, max_attempts=3)
def slow_first_time(context: TaskContext, seconds: float) -> int:
    if context.attempt == 1:
        time.sleep(seconds)
    return context.attempt


def plain_function() -> str:
    """Not a Task: a row naming it must never make the worker call it."""
    raise AssertionError("a plain function was called by the worker")


NOT_A_TASK = "a string at a dotted path"
