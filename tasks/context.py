"""The context a worker hands each handler: progress reports and the cancel flag, no DB calls."""

from __future__ import annotations

import time
from collections.abc import Callable

# A handler may report progress in a tight loop; at most this often does a report leave the
# process (the worker then writes it to the database at most once a second per task).
PROGRESS_SEND_INTERVAL = 0.2
PROGRESS_MESSAGE_MAX = 255


class WorkerTaskContext:
    """What a handler sees of the worker running it (implements `tasks.registry.TaskContext`).

    `cancel_requested` reads a flag the worker keeps up to date from its heartbeats, so
    handlers may check it as often as they like.
    """

    def __init__(
        self,
        *,
        task_id: int,
        attempt: int,
        worker_id: str,
        send_progress: Callable[[int, int, str], None],
        is_cancelled: Callable[[int], bool],
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.worker_id = worker_id
        self._send_progress = send_progress
        self._is_cancelled = is_cancelled
        self._last_sent: tuple[int, str] | None = None
        self._pending: tuple[int, str] | None = None
        self._next_send = 0.0

    def set_progress(self, percent: int | float, message: str = "") -> None:
        """Report `percent` (0-100) done, with an optional short message."""
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            raise TypeError(f"percent must be a number, not {type(percent).__name__}")
        report = (int(min(max(percent, 0), 100)), str(message)[:PROGRESS_MESSAGE_MAX])
        if report != self._last_sent:
            self._pending = report
        self._flush(force=report[0] == 100)

    @property
    def cancel_requested(self) -> bool:
        """Return True once someone asked for this task to be cancelled."""
        self._flush()
        return self._is_cancelled(self.task_id)

    def _flush(self, *, force: bool = False) -> None:
        # A report held back by the throttle goes out on the handler's next call.
        if self._pending is None:
            return
        now = time.monotonic()
        if force or now >= self._next_send:
            self._send_progress(self.task_id, *self._pending)
            self._last_sent, self._pending = self._pending, None
            self._next_send = now + PROGRESS_SEND_INTERVAL
