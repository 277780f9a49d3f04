"""Exceptions the task services and handlers raise."""

from __future__ import annotations


class TaskCancelled(Exception):
    """Raised by a handler that stops because its cancellation was requested."""


class TaskStateConflict(Exception):
    """The task is not in a state that allows the requested change."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class TaskTimeout(Exception):
    """An attempt ran past its task timeout and its worker process was killed (recorded, never raised)."""


class WorkerLost(Exception):
    """The worker (or its process) running an attempt died (recorded, never raised)."""
