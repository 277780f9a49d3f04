"""What a worker holds and what it owes the database: claimed tasks, outcomes, hand-backs, progress.

Every write goes through `Ledger.db_call`, so a lost or unavailable database costs a back-off
and a reconnect, never the worker: whatever could not be written stays here and is written on
a later round. Errors that waiting cannot cure (bad SQL, bad data) are raised.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from django.db import DatabaseError, OperationalError, close_old_connections, connection

from core import metrics
from core.db.errors import error_code, is_connection_lost, is_retryable_contention
from core.db.session import ensure_clean_session
from tasks import claims
from tasks.claims import UnsupportedDatabase
from tasks.models import QueueConfig, TaskQueue, TaskStatus
from tasks.outcomes import Outcome, OutcomeKind, bound_error
from tasks.worker import row
from tasks.worker.child import TaskSpec

__all__ = ["Ledger", "UnsupportedDatabase"]

logger = logging.getLogger("taskhub.worker")

T = TypeVar("T")

PROGRESS_WRITE_INTERVAL = 1.0
QUEUE_REFRESH_SECONDS = 1.0
# Django's per-request connection upkeep (CONN_MAX_AGE, health-check ping, no transaction left
# open), done at most this often while busy: before every batch it would cost two round trips
# per batch, and a connection that dies in between fails its next query, which db_call handles.
SESSION_UPKEEP_SECONDS = 1.0
# A queue found with nothing runnable is left out of the claims for this long while other queues
# keep the worker busy: each search of it reads past its scheduled (future run_at) tasks, once
# per batch otherwise. When the other queues run dry every queue is searched again at once.
IDLE_QUEUE_RECHECK_SECONDS = 1.0
DB_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# Too many connections (server-wide, per user): the server is up but full for now.
TRANSIENT_CODES = frozenset({1040, 1203})


@dataclass
class Held:
    """A task this worker has claimed and not yet recorded or handed back."""

    task: TaskQueue
    lease_seconds: int
    lease_deadline: float  # monotonic: the lease in the database ends then unless renewed
    cancel_requested: bool = False


class Ledger:
    """The worker parent's book of tasks in hand, and the database writes that settle it."""

    def __init__(self, *, worker_id: str, queue_names: Sequence[str], concurrency: int) -> None:
        self.worker_id = worker_id
        self.queue_names = list(queue_names)
        self.concurrency = concurrency
        self.held: dict[int, Held] = {}
        self.ready: deque[int] = deque()  # claimed, not yet sent to a child
        self.results: dict[int, Outcome] = {}  # reported by a child, not yet recorded
        self.results_since = 0.0
        self.to_release: set[int] = set()
        self.progress: dict[int, tuple[int, str]] = {}
        self.next_progress_write = 0.0
        self.queues: dict[int, QueueConfig] = {}  # every queue seen: timeouts and back-off
        self._runnable: list[QueueConfig] = []
        self._queues_read_at = float("-inf")
        self._session_kept_at = float("-inf")
        self._idle_until: dict[int, float] = {}  # queue id -> monotonic time to search it again
        self.renew_at = float("inf")
        self.processed = 0
        self.db_retry_at = 0.0
        self._db_failures = 0

    @property
    def active(self) -> int:
        """Held tasks that are still to run or running."""
        return len(self.held) - len(self.results) - len(self.to_release)

    def timeout_of(self, task_id: int) -> int:
        return self.queues[self.held[task_id].task.queue_id].task_timeout_seconds

    def spec(self, task_id: int) -> TaskSpec:
        held = self.held[task_id]
        task = held.task
        return TaskSpec(task.pk, task.task_type, task.payload, task.attempts, held.cancel_requested)

    def add_result(self, outcome: Outcome) -> None:
        if outcome.task_id not in self.held:
            return  # let go after a lost lease
        if not self.results:
            self.results_since = time.monotonic()
        self.results[outcome.task_id] = outcome

    def add_progress(self, task_id: int, percent: int, message: str) -> None:
        if task_id in self.held:
            self.progress[task_id] = (percent, message)

    def drop(self, task_id: int) -> None:
        """Forget a task: handed back, or lost with its lease (another worker takes it back)."""
        self.held.pop(task_id, None)
        self.progress.pop(task_id, None)
        self.results.pop(task_id, None)
        if task_id in self.ready:
            self.ready.remove(task_id)

    # --- Writes -------------------------------------------------------------------------------

    def sync(self, *, flush: bool, claim_limit: int) -> claims.Claim | None:
        """Record the outcomes reported so far (if `flush`) and claim up to `claim_limit` more.

        Both in one transaction. Returns the claim, or None when none was made (not asked
        for, or the database is unavailable: everything is kept for a later round).
        """
        batch = self._batch() if flush else []
        if batch and not self._write_last_progress(batch):
            return None
        cancels = [task.pk for task, _ in batch if self.held[task.pk].cancel_requested]

        searched: list[QueueConfig] = []

        def work() -> tuple[list[claims.Recorded], claims.Claim]:
            if claim_limit > 0:
                self._session_upkeep()
                searched[:] = self._queues_to_search()
            return claims.record_and_claim(
                worker_id=self.worker_id,
                results=batch,
                queues=self.queues,
                cancel_requested=cancels,
                claim_from=searched,
                limit=claim_limit,
            )

        now = time.monotonic()
        try:
            synced = self.db_call("recording outcomes and claiming", work)
        except DatabaseError as exc:
            if not batch:
                raise
            # The database refused the batch: record one by one so one bad row fails alone.
            logger.error("could not record %d outcomes together (%s); recording them one by one", len(batch), exc)
            recorded = self.db_call("recording outcomes", lambda: self._record_one_by_one(batch, cancels))
            if recorded is not None:
                self._forget_recorded(batch, recorded)
            return None
        if synced is None:
            return None
        recorded, claim = synced
        if batch:
            self._forget_recorded(batch, recorded)
        for task in claim.tasks:
            lease = self.queues[task.queue_id].task_timeout_seconds
            self.held[task.pk] = Held(task, lease_seconds=lease, lease_deadline=now + lease)
            self.renew_at = min(self.renew_at, now + lease / 2)
            self.ready.append(task.pk)
        if claim_limit <= 0:
            return None
        self._note_idle(claim, searched, now)
        return claim

    def _queues_to_search(self) -> list[QueueConfig]:
        """Return the runnable queues not found idle a moment ago, or all of them if every one was."""
        runnable = self._runnable_queues()
        now = time.monotonic()
        return [queue for queue in runnable if self._idle_until.get(queue.pk, 0.0) <= now] or runnable

    def _note_idle(self, claim: claims.Claim, searched: list[QueueConfig], now: float) -> None:
        """Remember the queues this claim found idle; mark the claim partial if some were left out."""
        claim.partial = len(searched) < len(self._runnable)
        if claim.partial and not claim.tasks:
            self._idle_until.clear()  # the busy queues ran dry: search every queue next time
            return
        for queue in searched:
            if queue.pk in claim.empty_queues:
                self._idle_until[queue.pk] = now + IDLE_QUEUE_RECHECK_SECONDS
            else:
                self._idle_until.pop(queue.pk, None)

    def _batch(self) -> list[tuple[TaskQueue, Outcome]]:
        return [(self.held[task_id].task, outcome) for task_id, outcome in self.results.items()]

    def _write_last_progress(self, batch: list[tuple[TaskQueue, Outcome]]) -> bool:
        """Write the last progress of finishing tasks first: their rows stop being ours after."""
        last = {task.pk: self.progress.pop(task.pk) for task, _ in batch if task.pk in self.progress}
        if last and self.db_call("writing progress", lambda: self._write_progress(last)) is None:
            self.progress.update(last)
            return False
        return True

    def _session_upkeep(self) -> None:
        """Do the worker's stand-in for Django's per-request cleanup, at most once a second."""
        now = time.monotonic()
        if now < self._session_kept_at + SESSION_UPKEEP_SECONDS:
            return
        ensure_clean_session(context_id=f"worker-{self.worker_id}")
        close_old_connections()
        self._session_kept_at = now

    def _runnable_queues(self) -> list[QueueConfig]:
        # Re-read often enough that pausing a queue stops claims within a second.
        now = time.monotonic()
        if now >= self._queues_read_at + QUEUE_REFRESH_SECONDS:
            self._runnable = claims.runnable_queues(self.queue_names)
            self.queues.update((queue.pk, queue) for queue in self._runnable)
            self._queues_read_at = now
        return self._runnable

    def _forget_recorded(self, batch: list[tuple[TaskQueue, Outcome]], recorded: list[claims.Recorded]) -> None:
        for task, _ in batch:
            self.held.pop(task.pk, None)
            self.results.pop(task.pk, None)
        self.processed += len(batch)
        for entry in recorded:
            _log_outcome(entry)

    def _record_one_by_one(self, batch: list[tuple[TaskQueue, Outcome]], cancels: list[int]) -> list[claims.Recorded]:
        recorded: list[claims.Recorded] = []
        for task, outcome in batch:
            try:
                recorded += claims.record_outcomes(
                    [(task, outcome)], worker_id=self.worker_id, queues=self.queues, cancel_requested=cancels
                )
            except DatabaseError as exc:
                if _transient(exc):
                    raise
                error = bound_error(f"the worker could not store this task's outcome: {exc}")
                failed = Outcome(task.pk, OutcomeKind.PERMANENT, error=error)
                recorded += claims.record_outcomes([(task, failed)], worker_id=self.worker_id, queues=self.queues)
        return recorded

    def flush_releases(self) -> None:
        """Hand back the tasks marked for it (claimed but not run, or cut short by shutdown)."""
        pending = [self.held[pk].task for pk in self.to_release if pk in self.held]
        if pending:
            released = self.db_call("handing back tasks", lambda: claims.release_tasks(pending))
            if released is None:
                return
            logger.info("handed back %d unfinished tasks to the queue", released)
            for task in pending:
                self.drop(task.pk)
        self.to_release.clear()

    def flush_progress(self) -> None:
        """Write the latest progress reports, at most once a second."""
        now = time.monotonic()
        if not self.progress or now < self.next_progress_write:
            return
        reports = self.progress
        if self.db_call("writing progress", lambda: self._write_progress(reports)) is not None:
            self.progress = {}
            self.next_progress_write = now + PROGRESS_WRITE_INTERVAL

    def _write_progress(self, reports: dict[int, tuple[int, str]]) -> bool:
        for task_id, (percent, message) in reports.items():
            TaskQueue.objects.held_by(self.worker_id).filter(pk=task_id).update(
                progress=percent, progress_message=message
            )
        return True

    def renew_leases(self) -> list[int] | None:
        """Extend every held lease; drop the ones lost; return tasks newly asked to cancel."""
        started = time.monotonic()
        tasks = [entry.task for entry in self.held.values()]
        leases = {entry.task.queue_id: entry.lease_seconds for entry in self.held.values()}
        check = self.db_call(
            "renewing leases", lambda: claims.renew_leases(worker_id=self.worker_id, tasks=tasks, lease_seconds=leases)
        )
        if check is None:
            return None
        self.renew_at = float("inf")
        cancelled = []
        for task_id, entry in list(self.held.items()):
            if task_id not in check.held:
                if task_id not in self.results:
                    logger.warning("task %s was taken back from this worker (lease lost); letting it go", task_id)
                    self.drop(task_id)
                continue
            entry.lease_deadline = started + entry.lease_seconds
            self.renew_at = min(self.renew_at, started + entry.lease_seconds / 2)
            if task_id in check.cancel_requested and not entry.cancel_requested:
                entry.cancel_requested = True
                cancelled.append(task_id)
        return cancelled

    def heartbeat(self) -> None:
        """Refresh this worker's row, take back leases of dead workers, prune their rows."""
        self.db_call("heartbeat", self._heartbeat)

    def _heartbeat(self) -> bool:
        row.worker_heartbeat(
            worker_id=self.worker_id,
            queues=self.queue_names,
            concurrency=self.concurrency,
            tasks_processed=self.processed,
        )
        recovered = claims.recover_expired_leases()
        if recovered:
            logger.warning(
                "took back %d tasks whose worker stopped renewing their lease (%s)",
                len(recovered),
                ", ".join(f"#{task.pk} {task.status}" for task in recovered),
            )
        pruned = row.workers_prune_stale()
        if pruned:
            logger.info("pruned %d stale worker rows", pruned)
        return True

    def db_call(self, what: str, work: Callable[[], T]) -> T | None:
        """Run `work`; on a lost or unavailable database log it, back off and return None."""
        if time.monotonic() < self.db_retry_at:
            return None
        try:
            result = work()
        except DatabaseError as exc:
            if not _transient(exc):
                raise
            delay = DB_RETRY_DELAYS[min(self._db_failures, len(DB_RETRY_DELAYS) - 1)]
            self._db_failures += 1
            self.db_retry_at = time.monotonic() + delay
            metrics.DB_ERRORS.labels(kind="worker").inc()
            if is_connection_lost(exc):
                metrics.DB_RECONNECTS.inc()
            logger.warning("database unavailable while %s (%s); reconnecting in %.1fs", what, exc, delay)
            _discard_connection()
            return None
        self._db_failures = 0
        return result


def _transient(exc: DatabaseError) -> bool:
    """Return True for errors that waiting and reconnecting cure (not bad data or bad SQL)."""
    if is_connection_lost(exc) or is_retryable_contention(exc) or error_code(exc) in TRANSIENT_CODES:
        return True
    # SQLite's "database is locked" and disk I/O errors carry no code.
    return connection.vendor == "sqlite" and isinstance(exc, OperationalError)


def _discard_connection() -> None:
    try:
        connection.close()
    except DatabaseError:
        connection.connection = None


def _log_outcome(entry: claims.Recorded) -> None:
    task, outcome = entry.task, entry.outcome
    if entry.status == TaskStatus.PENDING:
        logger.warning(
            "task %s (%s) attempt %d/%d failed, retrying at %s: %s",
            task.pk,
            task.task_type,
            task.attempts,
            task.max_attempts,
            task.run_at.isoformat(timespec="seconds"),
            outcome.summary,
        )
    elif entry.status == TaskStatus.FAILED:
        logger.error(
            "task %s (%s) failed after %d attempts: %s", task.pk, task.task_type, task.attempts, outcome.summary
        )
    elif entry.status == TaskStatus.CANCELLED:
        logger.info("task %s (%s) cancelled", task.pk, task.task_type)
