"""Django tasks of the example app: plain functions under Django's `@task`, run by `run_worker`.

from examples.reports.tasks import word_count
result = word_count.enqueue("to be or not to be")
result.refresh(); result.status, result.return_value
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from django.tasks import TaskContext, task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import TaskContext, task


@task
def word_count(text: str) -> dict[str, int]:
    """Count the words of `text`."""
    counts: dict[str, int] = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


def retry_soon(exception: BaseException, task_result: Any) -> float | None:
    """Retry a timeout after 5 s, 10 s, 20 s...; never retry a ValueError (bad input stays bad)."""
    if isinstance(exception, ValueError):
        return None
    return 5.0 * 2 ** (task_result.attempts - 1)


@task(priority=10, queue_name="default", takes_context=True, max_attempts=4, backoff=retry_soon, timeout=120)
def fetch_report(context: TaskContext, report_id: int) -> dict[str, Any]:
    """Pretend to build a report; `context.attempt` says which try this is."""
    if report_id < 0:
        raise ValueError(f"no report {report_id}")
    return {"report": report_id, "attempt": context.attempt, "task": context.task_result.id}


@task
async def ping(delay: float = 0.0) -> str:
    """A coroutine function: the worker runs it in an event loop of its own."""
    await asyncio.sleep(delay)
    return "pong"
