"""What came of one attempt at a task, as the worker's child process reports it to its parent."""

from __future__ import annotations

import enum
import json
import traceback
from dataclasses import dataclass
from typing import Any

# Error text stored on a task: the exception line plus as much of the traceback as fits.
ERROR_MAX_CHARS = 8000
LINE_MAX_CHARS = 1000
SUMMARY_MAX_CHARS = 300
# A result larger than this (as JSON) fails the task instead of bloating task_queue.
RESULT_MAX_BYTES = 1024 * 1024


class OutcomeKind(enum.StrEnum):
    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"  # the attempt failed: retried while attempts remain
    PERMANENT = "permanent"  # retrying cannot help (unknown task type, unusable result)
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Outcome:
    task_id: int
    kind: OutcomeKind
    result: Any = None
    error: str = ""
    # The class path of the exception that failed the attempt ("" when none was raised).
    exception: str = ""
    # Seconds until the retry, as the task's own backoff decided; None: the queue's backoff.
    retry_delay: float | None = None

    @property
    def summary(self) -> str:
        """Return the first line of the error (cut short), for log lines."""
        return self.error.splitlines()[0][:SUMMARY_MAX_CHARS] if self.error else ""


def exception_path(exc: BaseException) -> str:
    """Return the dotted path of `exc`'s class, as Django's `TaskError.exception_class_path` has it."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def format_error(exc: BaseException, *, limit: int = ERROR_MAX_CHARS) -> str:
    """Return "Type: message" and the traceback, cut to `limit` characters (keeping its end)."""
    headline = bound_error(f"{type(exc).__name__}: {exc}", limit=LINE_MAX_CHARS)
    # Long lines (a huge message repeated at the end) are cut one by one, so the frames survive.
    lines = "".join(traceback.format_exception(exc)).splitlines(keepends=True)
    trace = "".join(bound_error(line, limit=LINE_MAX_CHARS) for line in lines)
    return bound_error(f"{headline}\n\n{trace}", limit=limit)


TRACEBACK_START = "\n\nTraceback (most recent call last):"


def without_traceback(error: str) -> str:
    """Return the "Type: message" part of a stored error (what `format_error` put before its traceback).

    Task owners see this; the traceback (server paths, code lines) is kept for staff.
    """
    return error.split(TRACEBACK_START, 1)[0] if error else error


def bound_error(text: str, *, limit: int = ERROR_MAX_CHARS) -> str:
    """Cut `text` to `limit` characters, keeping its head and its tail (where the raise is)."""
    if len(text) <= limit:
        return text
    marker = f"\n... [{len(text) - limit} characters cut] ...\n"
    head = max(limit // 4, 0)
    tail = max(limit - head - len(marker), 0)
    return text[:head] + marker + text[len(text) - tail :]


def check_result(result: Any) -> str | None:
    """Return why `result` cannot be stored as the task's JSON result, or None if it can."""
    try:
        # allow_nan=False: NaN/Infinity are not JSON and MySQL's JSON check would refuse them.
        encoded = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"the handler's result is not JSON-serialisable: {exc}"
    if len(encoded.encode()) > RESULT_MAX_BYTES:
        return f"the handler's result is too large ({len(encoded.encode())} bytes > {RESULT_MAX_BYTES})"
    return None
