"""What the worker's parent and its children say to each other over each child's duplex pipe.

    parent -> child   ("run", [TaskSpec, ...])   tasks to run, in order
                      ("cancel", [task_id, ...]) cancellation requested
                      ("stop",)                  finish the current task, then exit
    child -> parent   ("done", task_id, kind, result, error, started, finished, exception, retry_delay)
                      ("progress", task_id, percent, message)

A child reports each task the moment it ends, before it starts the next, so after a kill the
parent knows exactly which task was running.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tasks.outcomes import Outcome, OutcomeKind

# `TaskQueue.kind` of a Django task (this module stays free of the models).
DJANGO_KIND = "django"


class TaskSpec(NamedTuple):
    """What a child needs to run one task."""

    task_id: int
    task_type: str
    payload: Any
    attempt: int
    cancel_requested: bool
    kind: str = "handler"
    # A Django task's row as its TaskResult shows it (queue, priority, created_at, started_at,
    # run_at); None for a registry handler.
    details: dict[str, Any] | None = None


class Done(NamedTuple):
    outcome: Outcome
    started: float  # time.monotonic() in the child (the same clock as the parent's)
    finished: float


def parse_done(message: tuple) -> Done:
    """Turn a child's "done" message into an Outcome with its timing."""
    _, task_id, kind, result, error, started, finished, *more = message
    exception, retry_delay = (*more, "", None)[:2]
    outcome = Outcome(
        task_id, OutcomeKind(kind), result=result, error=error, exception=exception, retry_delay=retry_delay
    )
    return Done(outcome, started, finished)
