"""The worker parent's round trips to the database, each settling its book of held tasks.

Record finished tasks and claim more (one transaction), hand tasks back, write progress,
renew leases, refresh this worker's row; take back the tasks other workers lost with their
lease and prune those workers' rows.

Once an hour (just after each hour's grace, jittered) a busy worker's heartbeat also rolls the
console's minute statistics up into hours (`hour_stats.roll_up_hours`), off the claim path.

Every round trip goes through `WorkerDatabase.call`, so a lost or unavailable database costs a
back-off and a reconnect, never the worker: whatever could not be written stays in the book
and is written on a later round. Errors that waiting cannot cure (bad SQL, bad data) are raised.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, OperationalError, close_old_connections, connection, connections
from django.utils import timezone

from core import metrics
from core.db import topology
from core.db.errors import error_code, is_connection_lost, is_retryable_contention
from core.db.features import UnsupportedDatabase, ensure_skip_locked
from core.db.session import ensure_clean_session

# The worker's only import of the state machine (.importlinter holds the others to that).
from tasks import hour_stats, schedules, transitions
from tasks.models import QueueConfig, TaskStatus
from tasks.outcomes import Outcome, OutcomeKind, bound_error
from tasks.worker import row
from tasks.worker.held import Batch, HeldTasks

__all__ = ["Claim", "UnsupportedDatabase", "WorkerDatabase"]

Claim = transitions.Claim

logger = logging.getLogger("taskhub.worker")

T = TypeVar("T")

QUEUE_REFRESH_SECONDS = 1.0
# Django's per-request connection upkeep (CONN_MAX_AGE, health-check ping, no transaction left
# open), done at most this often while busy: before every batch it would cost two round trips
# per batch, and a connection that dies in between fails its next query, which `call` handles.
SESSION_UPKEEP_SECONDS = 1.0
# A queue found with nothing runnable is left out of the claims for this long while other queues
# keep the worker busy: each search of it reads past its scheduled (future run_at) tasks, once
# per batch otherwise. When the other queues run dry every queue is searched again at once.
IDLE_QUEUE_RECHECK_SECONDS = 1.0
# Every worker looks for due schedules once a second (one indexed query when none is due), just
# after each whole second of the wall clock: fire times fall on whole seconds (cron, and intervals
# counted from a whole second), so a tick then finds them at once. The jitter spreads the workers.
# An idle worker's lease recovery and pruning wait the same margin past the moment its look read:
# recovery takes leases that ended before the database's clock (`lease_expires_at < now`), so at
# the very instant a lease ends (SQLite's clock counts whole milliseconds) it would find none and
# leave the task to the next look, a poll or two later.
SCHEDULE_TICK_SECONDS = 1.0
SCHEDULE_TICK_OFFSET = (0.005, 0.05)
# A worker rolls the minute statistics up into hours at most once an hour, this long (at random,
# to spread the workers) after the hour's grace: the first worker does the work, the others
# read the mark and find it done.
HOUR_ROLL_UP_JITTER_SECONDS = 60.0
DB_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# Too many connections (server-wide, per user): the server is up but full for now.
TRANSIENT_CODES = frozenset({1040, 1203})


class WorkerDatabase:
    """One worker's side of the database: its row, its claims and every write that settles its book."""

    def __init__(self, *, worker_id: str, queue_names: Sequence[str], concurrency: int) -> None:
        self.worker_id = worker_id
        self.queue_names = list(queue_names)
        self.concurrency = concurrency
        self._queues: dict[int, QueueConfig] = {}  # every queue seen: back-off for recording
        self._runnable: list[QueueConfig] = []
        self._queues_read_at = float("-inf")
        self._session_kept_at = float("-inf")
        self._idle_until: dict[int, float] = {}  # queue id -> monotonic time to search it again
        self._retry_at = 0.0
        self._failures = 0
        self._next_tick = 0.0  # monotonic time of the next schedule tick
        self._next_roll_up = 0.0  # wall-clock time (epoch seconds) of the next hour roll-up
        # When the last idle look found a lost lease or a stale worker row due (monotonic).
        self._recover_at = math.inf
        self._prune_at = math.inf

    # --- Connection and back-off ---------------------------------------------------------------

    def call(self, what: str, work: Callable[[], T]) -> T | None:
        """Run `work`; on a lost or unavailable database log it, back off and return None."""
        if time.monotonic() < self._retry_at:
            return None
        try:
            result = work()
        except DatabaseError as exc:
            if not _transient(exc):
                raise
            delay = DB_RETRY_DELAYS[min(self._failures, len(DB_RETRY_DELAYS) - 1)]
            self._failures += 1
            self._retry_at = time.monotonic() + delay
            metrics.DB_ERRORS.labels(kind="worker").inc()
            if is_connection_lost(exc):
                metrics.DB_RECONNECTS.inc()
            logger.warning("database unavailable while %s (%s); reconnecting in %.1fs", what, exc, delay)
            _discard_connection()
            return None
        self._failures = 0
        return result

    def available_at(self) -> float:
        """Return when the database may be tried again after trouble (monotonic; 0 when all is well)."""
        return self._retry_at

    def retry_now(self) -> None:
        """Forget the back-off: the next call tries the database at once."""
        self._retry_at = 0.0

    def ensure_usable(self) -> None:
        """Connect, and refuse a topology where claims would not exclude each other (raise UnsupportedDatabase).

        1. The server: MySQL 8.0.1+ or MariaDB 10.6+, not TiDB (`ensure_skip_locked`).
        2. A read-only server (`@@read_only`: a replica or a demoted primary) is logged: every
           write will fail until it is writable.
        3. The lock probe: a row locked FOR UPDATE SKIP LOCKED on one new connection must not be
           lockable from another (a proxy sending locking reads to a replica fails it).
        4. The claim query's plan: no full scan, no filesort (either would lock every row read).
        """
        connection.ensure_connection()
        ensure_skip_locked(connection)
        if connection.vendor != "mysql":
            return
        if topology.is_read_only(connection):
            logger.warning(
                "the database server is read-only (@@read_only = 1): a replica or a demoted primary; "
                "point MYSQL_HOST at the writable primary"
            )
        probe = topology.probe_connections(DEFAULT_DB_ALIAS, connections)
        if probe.problem:
            raise UnsupportedDatabase(f"Lock probe failed: {probe.problem}. {topology.PROBE_REMEDY}")
        if probe.doubt:
            logger.warning("lock probe inconclusive: %s", probe.doubt)
        plan = transitions.claim_plan_problem()
        if plan:
            raise UnsupportedDatabase(f"{plan}: {topology.PLAN_REMEDY}")

    def disconnect(self) -> None:
        """Close every database connection of this process."""
        connections.close_all()

    # --- This worker's row ---------------------------------------------------------------------

    def register(self) -> None:
        """Insert this worker's row."""
        row.worker_register(worker_id=self.worker_id, queues=self.queue_names, concurrency=self.concurrency)

    def heartbeat(self, *, processed: int, memory: int | None = None, draining: bool = False) -> bool:
        """Refresh this worker's row (attempts recorded, memory; re-created if pruned); return True when told to drain."""
        told = self.call(
            "heartbeat",
            lambda: row.worker_heartbeat(
                worker_id=self.worker_id,
                queues=self.queue_names,
                concurrency=self.concurrency,
                tasks_processed=processed,
                memory_rss_bytes=memory,
                draining=draining,
            ),
        )
        return bool(told) or draining

    def unregister(self) -> None:
        """Delete this worker's row (on a clean exit)."""
        self.call("unregistering", lambda: row.worker_unregister(worker_id=self.worker_id))

    # --- After other workers -------------------------------------------------------------------

    def recover_lost_tasks(self) -> None:
        """Take back running tasks whose worker stopped renewing their lease: retried, or failed."""
        recovered = self.call("taking back lost tasks", transitions.recover_expired_leases)
        if recovered:
            logger.warning(
                "took back %d tasks whose worker stopped renewing their lease (%s)",
                len(recovered),
                ", ".join(f"#{task.pk} {task.status}" for task in recovered),
            )

    def next_tick_at(self) -> float:
        """Return when the next schedule tick is due (monotonic)."""
        return self._next_tick

    def fire_schedules(self) -> None:
        """Fire the schedules that are due, once a second; another node winning a fire time is no error."""
        now = time.monotonic()
        if now < self._next_tick:
            return
        self._next_tick = _next_whole_second(now)
        result = self.call("firing schedules", schedules.schedules_fire_due)
        if result is not None and (result.fired or result.skipped):
            logger.debug(
                "schedules: %d fired, %d skipped, %d taken by another worker", result.fired, result.skipped, result.lost
            )

    def roll_up_hours(self) -> None:
        """Roll the minute statistics up into hours when this worker's hourly turn has come (in memory first).

        Due at start-up, then once an hour just after an hour's grace; sooner again when a day of
        hours was left to catch up on, or the database was unavailable (the next heartbeat tries again).
        """
        now = time.time()
        if now < self._next_roll_up:
            return
        more = self.call("rolling up hour statistics", hour_stats.roll_up_hours)
        if more is not False:  # more hours to catch up on, or the database was unavailable
            self._next_roll_up = now
            return
        grace = hour_stats.HOUR_ROLL_UP_GRACE.total_seconds()
        self._next_roll_up = (
            (now - grace) // 3600 * 3600 + 3600 + grace + random.uniform(0, HOUR_ROLL_UP_JITTER_SECONDS)
        )

    def prune_dead_workers(self) -> None:
        """Delete the rows of workers silent for longer than TASKHUB_WORKER_STALE_SECONDS."""
        pruned = self.call("pruning stale worker rows", row.workers_prune_stale)
        if pruned:
            logger.info("pruned %d stale worker rows", pruned)

    # --- Settling the book ---------------------------------------------------------------------

    def record_and_claim(self, held: HeldTasks, *, flush: bool, claim_limit: int) -> transitions.Claim | None:
        """Record the outcomes in `held` (if `flush`) and claim up to `claim_limit` more into it.

        Both in one transaction. Returns the claim, or None when none was made (not asked
        for, or the database is unavailable: everything is kept for a later round).
        """
        batch = held.to_record() if flush else []
        if batch and not self._write_last_progress(held, batch):
            return None
        cancels = held.cancel_requested_in(batch)

        searched: list[QueueConfig] = []

        def work() -> tuple[list[transitions.Recorded], transitions.Claim]:
            if claim_limit > 0:
                self._session_upkeep()
                searched[:] = self._queues_to_search(held)
            return transitions.record_and_claim(
                worker_id=self.worker_id,
                results=batch,
                queues=self._queues,
                cancel_requested=cancels,
                claim_from=searched,
                limit=claim_limit,
                look_ahead=True,
            )

        now = time.monotonic()
        try:
            synced = self.call("recording outcomes and claiming", work)
        except DatabaseError as exc:
            if not batch:
                raise
            # The database refused the batch: record one by one so one bad row fails alone.
            logger.error("could not record %d outcomes together (%s); recording them one by one", len(batch), exc)
            recorded = self.call("recording outcomes", lambda: self._record_one_by_one(batch, cancels))
            if recorded is not None:
                self._forget_recorded(held, batch, recorded)
            return None
        if synced is None:
            return None
        recorded, claim = synced
        if batch:
            self._forget_recorded(held, batch, recorded)
        held.add_claimed(claim.tasks, now)
        if claim_limit <= 0:
            return None
        if self._next_tick > now + SCHEDULE_TICK_SECONDS:  # an idle look put it off: tick each second again
            self._next_tick = _next_whole_second(now)
        self._note_idle(claim, searched, now)
        return claim

    def hand_back(self, held: HeldTasks) -> None:
        """Hand back the tasks marked for it (claimed but not run, or cut short by shutdown)."""
        pending = held.to_hand_back()
        if pending:
            released = self.call("handing back tasks", lambda: transitions.release(pending))
            if released is None:
                return
            logger.info("handed back %d unfinished tasks to the queue", released)
        held.handed_back(pending)

    def flush_progress(self, held: HeldTasks) -> None:
        """Write the latest progress reports, at most once a second."""
        now = time.monotonic()
        reports = held.progress_due(now)
        if not reports:
            return
        if (
            self.call("writing progress", lambda: transitions.write_progress(worker_id=self.worker_id, reports=reports))
            is not None
        ):
            held.progress_written(now)

    def renew_leases(self, held: HeldTasks) -> list[int] | None:
        """Extend every held lease; let go of the ones lost; return tasks newly asked to cancel."""
        started = time.monotonic()
        tasks, leases = held.lease_renewal()
        check = self.call(
            "renewing leases",
            lambda: transitions.renew_leases(worker_id=self.worker_id, tasks=tasks, lease_seconds=leases),
        )
        if check is None:
            return None
        return held.leases_renewed(still_held=check.held, cancel_requested=check.cancel_requested, at=started)

    def look(self) -> transitions.IdleLook | None:
        """Read when the next task, fire time, lost lease and stale row are due; None when the database is away.

        An idle worker's poll while wake-ups are live (`transitions.idle_look`, one SELECT). The
        schedule tick, lease recovery and pruning then wait for the moment it read (`due_upkeep`);
        a claim (work arrived) brings back the tick once a second.
        """

        def work() -> transitions.IdleLook:
            self._session_upkeep()
            return transitions.idle_look(self.queue_names)

        look = self.call("looking for due work", work)
        if look is None:
            return None
        now, wall = time.monotonic(), timezone.now()
        offset = random.uniform(*SCHEDULE_TICK_OFFSET)
        self._next_tick = _at(now, look.fire_at, wall, offset)
        self._recover_at = _at(now, look.lease_end, look.now, offset)
        stale = timedelta(seconds=settings.TASKHUB_WORKER_STALE_SECONDS)
        self._prune_at = _at(now, look.oldest_heartbeat and look.oldest_heartbeat + stale, wall, offset)
        return look

    def due_upkeep_at(self) -> float:
        """Return when the look found a lost lease or a stale worker row due (monotonic; inf: none)."""
        return min(self._recover_at, self._prune_at)

    def due_upkeep(self) -> None:
        """Take back lost tasks and prune stale rows if the last look found them due (idle, wake-ups live)."""
        now = time.monotonic()
        if now >= self._recover_at:
            self._recover_at = math.inf  # the next look says when again
            self.recover_lost_tasks()
        if now >= self._prune_at:
            self._prune_at = math.inf
            self.prune_dead_workers()

    def woken(self, queue_names: set[str | None]) -> None:
        """Search the woken queues at the next claim, even one found idle a moment ago.

        A name not among the runnable queues (one just resumed or created) makes the list be
        read again; None (any queue) clears every idle mark.
        """
        by_name = {queue.name: queue.pk for queue in self._runnable}
        if None in queue_names:
            self._idle_until.clear()
        for name in queue_names - {None}:
            if name in by_name:
                self._idle_until.pop(by_name[name], None)
            elif not self.queue_names or name in self.queue_names:
                self._queues_read_at = float("-inf")
                self._idle_until.clear()

    # --- Helpers -------------------------------------------------------------------------------

    def _write_last_progress(self, held: HeldTasks, batch: Batch) -> bool:
        """Write the last progress of finishing tasks first: their rows stop being ours after."""
        last = held.take_last_progress(batch)
        if (
            last
            and self.call(
                "writing progress", lambda: transitions.write_progress(worker_id=self.worker_id, reports=last)
            )
            is None
        ):
            held.put_back_progress(last)
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

    def _queues_to_search(self, held: HeldTasks) -> list[QueueConfig]:
        """Return the runnable queues not found idle a moment ago, or all of them if every one was."""
        runnable = self._runnable_queues(held)
        now = time.monotonic()
        return [queue for queue in runnable if self._idle_until.get(queue.pk, 0.0) <= now] or runnable

    def _runnable_queues(self, held: HeldTasks) -> list[QueueConfig]:
        # Re-read often enough that a queue's change (paused, fairness, limits) reaches the claims
        # within a second, and within one poll interval when that is shorter.
        now = time.monotonic()
        if now >= self._queues_read_at + min(QUEUE_REFRESH_SECONDS, settings.TASKHUB_POLL_INTERVAL_SECONDS):
            self._runnable = transitions.runnable_queues(self.queue_names)
            self._queues.update((queue.pk, queue) for queue in self._runnable)
            held.set_timeouts({queue.pk: queue.task_timeout_seconds for queue in self._runnable})
            held.set_queue_names({queue.pk: queue.name for queue in self._runnable})
            self._queues_read_at = now
        return self._runnable

    def _note_idle(self, claim: transitions.Claim, searched: list[QueueConfig], now: float) -> None:
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

    def _forget_recorded(self, held: HeldTasks, batch: Batch, recorded: list[transitions.Recorded]) -> None:
        held.forget_recorded(batch)
        for entry in recorded:
            _log_outcome(entry)

    def _record_one_by_one(self, batch: Batch, cancels: list[int]) -> list[transitions.Recorded]:
        recorded: list[transitions.Recorded] = []
        for task, outcome in batch:
            try:
                recorded += transitions.record_outcomes(
                    [(task, outcome)], worker_id=self.worker_id, queues=self._queues, cancel_requested=cancels
                )
            except DatabaseError as exc:
                if _transient(exc):
                    raise
                error = bound_error(f"the worker could not store this task's outcome: {exc}")
                failed = Outcome(task.pk, OutcomeKind.PERMANENT, error=error)
                recorded += transitions.record_outcomes([(task, failed)], worker_id=self.worker_id, queues=self._queues)
        return recorded


def _next_whole_second(now: float) -> float:
    """Return (monotonic) just after the next whole second of the wall clock: one tick per second at most."""
    return now + SCHEDULE_TICK_SECONDS - time.time() % SCHEDULE_TICK_SECONDS + random.uniform(*SCHEDULE_TICK_OFFSET)


def _at(now: float, moment: datetime | None, clock: datetime, offset: float = 0.0) -> float:
    """Return the monotonic time when `clock` reaches `moment` (plus `offset`); inf for no moment."""
    if moment is None:
        return math.inf
    return now + max((moment - clock).total_seconds(), 0.0) + offset


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


def _log_outcome(entry: transitions.Recorded) -> None:
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
