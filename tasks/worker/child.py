"""The worker's child process: runs handlers one at a time for its parent (see `children.py`).

It takes tasks from its pipe, runs them in the order sent and reports each the moment it ends
(the messages are in `messages.py`). It ignores SIGTERM/SIGINT: the parent decides when to stop.
A Django task (kind "django") is run by `tasks.backends.running` instead of a registry handler.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from django.db import close_old_connections, connections

from core.db.session import ensure_clean_session
from core.request_context import reset_request_id, set_request_id
from tasks.context import WorkerTaskContext
from tasks.errors import TaskCancelled
from tasks.outcomes import Outcome, OutcomeKind, check_result, exception_path, format_error
from tasks.registry import UnknownTaskType, get_handler
from tasks.worker.messages import DJANGO_KIND, TaskSpec

# How often a handler's `cancel_requested` looks at the pipe for news from the parent.
CANCEL_POLL_SECONDS = 0.05
# How often the lease watchdog reads the deadline its parent publishes.
WATCHDOG_POLL_SECONDS = 0.05
PR_SET_PDEATHSIG = 1

# Connection objects inherited from the parent at fork: kept referenced, never closed, because
# closing one would end the parent's session on the shared socket.
_inherited: list[Any] = []


def child_main(
    conn: Connection, worker_id: str, parent_pid: int, inherited: list[Connection], stop_by: ctypes.c_double
) -> None:
    """Run in a freshly forked child: serve the parent until it says stop or goes away."""
    _detach_from_parent(parent_pid, inherited)
    LeaseWatchdog(stop_by).start()
    _Runner(conn, worker_id).serve()


class LeaseWatchdog(threading.Thread):
    """End this process when the leases of its tasks end, whether or not its parent is alive.

    The parent renews the leases; if it cannot (frozen by SIGSTOP or a paused VM, cut off from
    the database) another worker takes the task back once the lease ends, and a handler still
    running here would run beside the new one. The parent writes when that would be into shared
    memory every round (`Pool.publish_deadlines`); this thread arms the kernel's interval timer
    for that moment. SIGALRM, left at its default action, ends the process in the kernel: a
    handler stuck in C code holding the GIL is stopped too (only re-arming needs this thread).
    Handlers must not use SIGALRM or ITIMER_REAL themselves.
    """

    def __init__(self, stop_by: ctypes.c_double) -> None:
        super().__init__(name="lease-watchdog", daemon=True)
        self.stop_by = stop_by
        self.armed = math.inf

    def run(self) -> None:
        while True:
            self.arm(self.stop_by.value)
            time.sleep(WATCHDOG_POLL_SECONDS)

    def arm(self, stop_by: float) -> None:
        if stop_by == self.armed:
            return
        self.armed = stop_by
        if math.isinf(stop_by):
            signal.setitimer(signal.ITIMER_REAL, 0)
        else:
            signal.setitimer(signal.ITIMER_REAL, max(stop_by - time.monotonic(), 0.001))


def _detach_from_parent(parent_pid: int, inherited: list[Connection]) -> None:
    """Undo what fork copied from the parent that a child must not use."""
    # The parent decides when to stop: Ctrl-C and `kill` of the whole process group (systemd
    # does that) must not interrupt the handler before the parent's grace period ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the lease watchdog's timer ends the process
    try:
        # Die with the parent (Linux), so a SIGKILLed worker leaves no handler running on.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (AttributeError, OSError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)
    for sibling in inherited:
        sibling.close()
    for wrapper in connections.all(initialized_only=True):
        if wrapper.connection is not None:
            _inherited.append(wrapper.connection)
            wrapper.connection = None


class _Runner:
    """The child's loop: take tasks from the pipe, run them in order, report each at once."""

    def __init__(self, conn: Connection, worker_id: str) -> None:
        self.conn = conn
        self.worker_id = worker_id
        self.queue: deque[TaskSpec] = deque()
        self.cancelled: set[int] = set()
        self.stopping = False
        self.next_poll = 0.0

    def serve(self) -> None:
        while not self.stopping:
            if not self.queue:
                try:
                    self._handle(self.conn.recv())
                except (EOFError, OSError):
                    return
                continue
            self._poll()
            if not self.stopping:
                self._run(self.queue.popleft())

    def _poll(self) -> None:
        try:
            while self.conn.poll():
                self._handle(self.conn.recv())
        except (EOFError, OSError):
            self.stopping = True

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "run":
            self.queue.extend(message[1])
        elif kind == "cancel":
            self.cancelled.update(message[1])
        elif kind == "stop":
            self.stopping = True

    def is_cancelled(self, task_id: int) -> bool:
        now = time.monotonic()
        if now >= self.next_poll:
            self.next_poll = now + CANCEL_POLL_SECONDS
            self._poll()
        return task_id in self.cancelled

    def send_progress(self, task_id: int, percent: int, message: str) -> None:
        self.conn.send(("progress", task_id, percent, message))

    def _run(self, spec: TaskSpec) -> None:
        if spec.cancel_requested:
            self.cancelled.add(spec.task_id)
        context_id = f"task-{spec.task_id}"
        token = set_request_id(context_id)
        started = time.monotonic()
        try:
            close_old_connections()
            outcome = self._execute(spec)
        finally:
            ensure_clean_session(context_id=context_id)
            close_old_connections()
            reset_request_id(token)
        self.cancelled.discard(spec.task_id)
        message = (
            "done",
            spec.task_id,
            outcome.kind.value,
            outcome.result,
            outcome.error,
            started,
            time.monotonic(),
            outcome.exception,
            outcome.retry_delay,
        )
        try:
            self.conn.send(message)
        except Exception as exc:  # the result pickled badly: report that instead
            error = f"the handler's result could not be passed on: {exc}"
            self.conn.send(("done", spec.task_id, OutcomeKind.PERMANENT.value, None, error, started, time.monotonic()))

    def _execute(self, spec: TaskSpec) -> Outcome:
        if spec.kind == DJANGO_KIND:
            # Imported here: the Django task framework loads only in workers that run its tasks.
            from tasks.backends.running import run_django_task

            if spec.task_id in self.cancelled:
                return Outcome(spec.task_id, OutcomeKind.CANCELLED, error="cancelled before it started")
            return run_django_task(spec, worker_id=self.worker_id)
        task_id = spec.task_id
        context = WorkerTaskContext(
            task_id=task_id,
            attempt=spec.attempt,
            worker_id=self.worker_id,
            send_progress=self.send_progress,
            is_cancelled=self.is_cancelled,
        )
        try:
            if task_id in self.cancelled:
                raise TaskCancelled("cancelled before it started")
            result = get_handler(spec.task_type).func(spec.payload, context)
        except TaskCancelled as exc:
            return Outcome(task_id, OutcomeKind.CANCELLED, error=str(exc) or "cancelled")
        except UnknownTaskType as exc:
            return Outcome(task_id, OutcomeKind.PERMANENT, error=str(exc))
        except Exception as exc:
            return Outcome(task_id, OutcomeKind.RETRYABLE, error=format_error(exc), exception=exception_path(exc))
        problem = check_result(result)
        if problem:
            return Outcome(task_id, OutcomeKind.PERMANENT, error=problem)
        return Outcome(task_id, OutcomeKind.SUCCEEDED, result=result)
