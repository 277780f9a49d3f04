"""Exceptions the task services and handlers raise."""

from __future__ import annotations


class TaskCancelled(Exception):
    """Raised by a handler that stops because its cancellation was requested."""


class TaskStateConflict(Exception):
    """The task is not in a state that allows the requested change."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status
