"""The worker parent's book of the tasks it holds: in memory only, never a database round trip.

A task enters the book when it is claimed and leaves it when its outcome is recorded, when it
is handed back, or when its lease is lost. In between it waits in line for a child, runs, and
then waits with its outcome for the next recording batch. The database side (`db.py`) settles
the book; the loop (`loop.py`) asks it questions and tells it what the children reported.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.outcomes import Outcome
from tasks.worker.messages import DJANGO_KIND, TaskSpec

if TYPE_CHECKING:  # type hints only: this module never queries (see test_worker_held.py)
    from tasks.models import TaskQueue

logger = logging.getLogger("taskhub.worker")

Batch = list[tuple["TaskQueue", Outcome]]  # held tasks with the outcome to record for each

PROGRESS_WRITE_INTERVAL = 1.0
# The worker stops a handler whose lease could not be renewed this long before the lease ends in
# the database (a tenth of the lease, at most a second), and the child process stops itself at
# half of it (`child.py`): both before any other worker may take the task back.
LEASE_MARGIN_MAX_SECONDS = 1.0


def lease_margin(lease_seconds: float) -> float:
    """Return how long before a lease's end the worker stops the handler running under it."""
    return min(LEASE_MARGIN_MAX_SECONDS, lease_seconds / 10)


@dataclass
class HeldTask:
    """A task this worker has claimed and not yet recorded or handed back."""

    task: TaskQueue
    lease_seconds: int
    lease_deadline: float  # monotonic: the lease in the database ends then unless renewed
    cancel_requested: bool = False

    @property
    def stop_by(self) -> float:
        """Return when the worker stops the handler if the lease is not renewed (monotonic)."""
        return self.lease_deadline - lease_margin(self.lease_seconds)

    @property
    def child_stops_by(self) -> float:
        """Return when the child process stops itself if the lease is not renewed (monotonic)."""
        return self.lease_deadline - lease_margin(self.lease_seconds) / 2


class HeldTasks:
    """The tasks in hand: waiting for a child, running, finished and waiting to be recorded."""

    def __init__(self) -> None:
        self._tasks: dict[int, HeldTask] = {}
        self._ready: deque[int] = deque()  # claimed, not yet sent to a child
        self._outcomes: dict[int, Outcome] = {}  # reported by a child, not yet recorded
        self._outcomes_since = 0.0
        self._to_release: set[int] = set()
        self._progress: dict[int, tuple[int, str]] = {}
        self._next_progress_write = 0.0
        self._timeouts: dict[int, int] = {}  # queue id -> task timeout (and lease) in seconds
        self._queue_names: dict[int, str] = {}  # queue id -> name, for Django tasks' results
        self._renew_at = float("inf")
        self._processed = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._tasks))

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    # --- Questions -----------------------------------------------------------------------------

    def processed(self) -> int:
        """Return how many attempts this worker has run and recorded."""
        return self._processed

    def active(self) -> int:
        """Return how many held tasks are still to run or running."""
        return len(self._tasks) - len(self._outcomes) - len(self._to_release)

    def ready(self) -> list[int]:
        """Return the tasks claimed and not yet sent to a child, in the order they go."""
        return list(self._ready)

    def ready_count(self) -> int:
        """Return how many tasks wait in line for a child."""
        return len(self._ready)

    def has_outcome(self, task_id: int) -> bool:
        """Return True if the task's outcome waits to be recorded."""
        return task_id in self._outcomes

    def outcomes_waiting(self) -> int:
        """Return how many outcomes wait to be recorded."""
        return len(self._outcomes)

    def outcomes_waiting_since(self) -> float:
        """Return when the oldest outcome waiting to be recorded came in (monotonic)."""
        return self._outcomes_since

    def timeout_of(self, task_id: int) -> int:
        """Return the held task's timeout (its own, else its queue's), in seconds."""
        return self._tasks[task_id].lease_seconds

    def task_type_of(self, task_id: int) -> str:
        """Return the held task's type, for the log."""
        return self._tasks[task_id].task.task_type

    def spec(self, task_id: int) -> TaskSpec:
        """Return what a child needs to run the held task."""
        held = self._tasks[task_id]
        task = held.task
        if task.kind == DJANGO_KIND:
            details = {
                "queue": self._queue_names.get(task.queue_id, ""),
                "priority": task.priority,
                "created_at": task.created_at,
                "started_at": task.started_at,
                "run_at": task.run_at,
            }
            return TaskSpec(
                task.pk, task.task_type, task.payload, task.attempts, held.cancel_requested, task.kind, details
            )
        return TaskSpec(task.pk, task.task_type, task.payload, task.attempts, held.cancel_requested)

    def deadline_of(self, task_id: int, started: float) -> float | None:
        """Return when a task running since `started` must be stopped: at its timeout or, a margin
        before, its lease's end.

        None when the task is no longer held (its lease was lost): it must be stopped now.
        """
        held = self._tasks.get(task_id)
        if held is None:
            return None
        return min(started + held.lease_seconds, held.stop_by)

    def lease_expired(self, task_id: int, now: float) -> bool:
        """Return True if the task's lease has ended, or is within its margin (or it was already let go)."""
        held = self._tasks.get(task_id)
        return held is None or now >= held.stop_by

    def ready_past_lease(self, now: float) -> list[int]:
        """Return the tasks still waiting for a child whose lease could not be renewed in time."""
        return [task_id for task_id in self._ready if now >= self._tasks[task_id].stop_by]

    def child_stops_by(self, task_ids: Iterable[int]) -> float:
        """Return when a child holding `task_ids` must stop itself unless leases are renewed (monotonic; inf: never)."""
        return min(
            (self._tasks[task_id].child_stops_by for task_id in task_ids if task_id in self._tasks),
            default=float("inf"),
        )

    def renewal_due(self, now: float, *, heartbeat: bool) -> bool:
        """Return True when the leases should be renewed: half-way through the shortest, or at a heartbeat."""
        if not self._tasks:
            self._renew_at = float("inf")  # nothing to renew: no wake-up for it either
            return False
        return heartbeat or now >= self._renew_at

    def next_due(self, now: float, *, flush_delay: float) -> float:
        """Return the next moment the book needs the database (monotonic).

        For a lease renewal, outcomes waiting `flush_delay` for a fuller batch, progress
        to write, or tasks to hand back.
        """
        moments = [self._renew_at]
        if self._outcomes:
            moments.append(self._outcomes_since + flush_delay)
        if self._progress:
            moments.append(self._next_progress_write)
        if self._to_release:
            moments.append(now)
        return min(moments)

    # --- What the children report --------------------------------------------------------------

    def add_outcome(self, outcome: Outcome) -> None:
        """Keep an outcome for the next recording batch (ignored if the task was let go)."""
        if outcome.task_id not in self._tasks:
            return  # let go after a lost lease
        if not self._outcomes:
            self._outcomes_since = time.monotonic()
        self._outcomes[outcome.task_id] = outcome

    def add_progress(self, task_id: int, percent: int, message: str) -> None:
        """Keep the latest progress report of a held task for the next progress write."""
        if task_id in self._tasks:
            self._progress[task_id] = (percent, message)

    # --- The line of tasks waiting for a child -------------------------------------------------

    def take_ready(self, count: int) -> list[TaskSpec]:
        """Take the first `count` tasks off the line, as the specs a child runs."""
        return [self.spec(self._ready.popleft()) for _ in range(count)]

    def requeue_front(self, task_ids: Sequence[int]) -> None:
        """Put tasks a child never started back at the front of the line, in their order."""
        self._ready.extendleft(pk for pk in reversed(task_ids) if pk in self._tasks)

    def release_later(self, task_ids: Iterable[int]) -> None:
        """Mark tasks for hand-back to the queue on the next write (those with no outcome waiting)."""
        self._to_release.update(pk for pk in task_ids if pk not in self._outcomes)

    def release_waiting(self) -> None:
        """Mark every task still waiting in line for hand-back, and empty the line."""
        self._to_release.update(self._ready)
        self._ready.clear()

    def release_all_unfinished(self) -> None:
        """Mark every held task with no outcome waiting for hand-back."""
        self.release_later(self._tasks)

    def drop(self, task_id: int) -> None:
        """Forget a task: handed back, or lost with its lease (another worker takes it back)."""
        self._tasks.pop(task_id, None)
        self._progress.pop(task_id, None)
        self._outcomes.pop(task_id, None)
        if task_id in self._ready:
            self._ready.remove(task_id)

    # --- What the database side settles --------------------------------------------------------

    def set_timeouts(self, timeouts: Mapping[int, int]) -> None:
        """Note the task timeout (also the lease a claim gets) of each queue, by queue id."""
        self._timeouts.update(timeouts)

    def set_queue_names(self, names: Mapping[int, str]) -> None:
        """Note each queue's name, by queue id (a Django task's result names its queue)."""
        self._queue_names.update(names)

    def add_claimed(self, tasks: Iterable[TaskQueue], now: float) -> None:
        """Hold freshly claimed tasks, leased for their timeout (own, else their queue's) from `now`, at the end of the line."""
        for task in tasks:
            lease = task.timeout_seconds or self._timeouts[task.queue_id]
            self._tasks[task.pk] = HeldTask(task, lease_seconds=lease, lease_deadline=now + lease)
            self._renew_at = min(self._renew_at, now + lease / 2)
            self._ready.append(task.pk)

    def to_record(self) -> Batch:
        """Return the held tasks with an outcome waiting to be recorded, each with its outcome."""
        return [(self._tasks[task_id].task, outcome) for task_id, outcome in self._outcomes.items()]

    def cancel_requested_in(self, batch: Batch) -> list[int]:
        """Return the tasks of `batch` someone asked to cancel."""
        return [task.pk for task, _ in batch if self._tasks[task.pk].cancel_requested]

    def forget_recorded(self, batch: Batch) -> None:
        """Let go of a recorded batch: applied or not (taken back meanwhile), none is ours any more."""
        for task, _ in batch:
            self._tasks.pop(task.pk, None)
            self._outcomes.pop(task.pk, None)
        self._processed += len(batch)

    def take_last_progress(self, batch: Batch) -> dict[int, tuple[int, str]]:
        """Take the progress reports of the tasks of `batch` out of the book: written before their outcome."""
        if not self._progress:
            return {}
        return {task.pk: self._progress.pop(task.pk) for task, _ in batch if task.pk in self._progress}

    def put_back_progress(self, reports: Mapping[int, tuple[int, str]]) -> None:
        """Keep progress reports that could not be written for a later write."""
        self._progress.update(reports)

    def progress_due(self, now: float) -> Mapping[int, tuple[int, str]]:
        """Return the progress reports to write now: none if the last write was under a second ago."""
        if now < self._next_progress_write:
            return {}
        return self._progress

    def progress_written(self, now: float) -> None:
        """Forget the reports just written; the next write waits PROGRESS_WRITE_INTERVAL."""
        self._progress = {}
        self._next_progress_write = now + PROGRESS_WRITE_INTERVAL

    def to_hand_back(self) -> list[TaskQueue]:
        """Return the held tasks marked for hand-back."""
        return [self._tasks[pk].task for pk in self._to_release if pk in self._tasks]

    def handed_back(self, tasks: Iterable[TaskQueue]) -> None:
        """Forget the tasks handed back; nothing is left marked for hand-back."""
        for task in tasks:
            self.drop(task.pk)
        self._to_release.clear()

    def lease_renewal(self) -> tuple[list[TaskQueue], dict[int, int]]:
        """Return every held task and the lease length of each of their queues, by queue id."""
        entries = self._tasks.values()
        return [entry.task for entry in entries], {entry.task.queue_id: entry.lease_seconds for entry in entries}

    def leases_renewed(self, *, still_held: set[int], cancel_requested: set[int], at: float) -> list[int]:
        """Restart the leases renewed at `at`, let go of the ones lost; return tasks newly asked to cancel."""
        self._renew_at = float("inf")
        cancelled = []
        for task_id, entry in list(self._tasks.items()):
            if task_id not in still_held:
                if task_id not in self._outcomes:
                    logger.warning("task %s was taken back from this worker (lease lost); letting it go", task_id)
                    self.drop(task_id)
                continue
            entry.lease_deadline = at + entry.lease_seconds
            self._renew_at = min(self._renew_at, at + entry.lease_seconds / 2)
            if task_id in cancel_requested and not entry.cancel_requested:
                entry.cancel_requested = True
                cancelled.append(task_id)
        return cancelled
