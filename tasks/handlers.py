"""Built-in task types for smoke tests and benchmarks: echo, sleep, fail."""

from __future__ import annotations

import time
from typing import Any

from tasks.errors import TaskCancelled
from tasks.registry import TaskContext, register

SLEEP_MAX_SECONDS = 3600.0
SLEEP_STEP_SECONDS = 0.1


@register("echo", description="Return the payload unchanged.")
def echo(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return payload


@register("sleep", description='Sleep {"seconds": s}, reporting progress; stops when cancelled.')
def sleep(payload: dict[str, Any], ctx: TaskContext) -> dict[str, float]:
    seconds = payload.get("seconds", 1)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= SLEEP_MAX_SECONDS:
        raise ValueError(f"'seconds' must be a number between 0 and {SLEEP_MAX_SECONDS:g}")
    started = time.monotonic()
    deadline = started + seconds
    last_percent = -1
    while (now := time.monotonic()) < deadline:
        if ctx.cancel_requested:
            raise TaskCancelled(f"cancelled after {now - started:.1f}s of {seconds}s")
        percent = int(100 * (now - started) / seconds) if seconds else 100
        if percent != last_percent:
            ctx.set_progress(percent, f"slept {now - started:.1f}s of {seconds}s")
            last_percent = percent
        time.sleep(min(SLEEP_STEP_SECONDS, deadline - now))
    ctx.set_progress(100, "done")
    return {"slept": round(time.monotonic() - started, 3)}


class TaskFailure(Exception):
    """The error the built-in `fail` task raises."""


@register("fail", description='Raise an error with {"message": m}.')
def fail(payload: dict[str, Any], ctx: TaskContext) -> None:
    raise TaskFailure(str(payload.get("message", "failed on purpose")))
