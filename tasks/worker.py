"""The worker: a parent process that claims, records and keeps leases; child processes run handlers.

One round of `Worker.run_one()`:
    1. wait for reports from the children (or a signal, or the next timer);
    2. collect them: outcomes, progress, children that died;
    3. kill a child whose task outlived its timeout (the task is retried or failed) and replace it;
    4. record outcomes in one transaction per batch, and progress at most once a second;
    5. on each heartbeat: renew leases, pass cancel requests on, refresh the worker row, take back
       expired leases of dead workers, prune their rows;
    6. claim a batch if the children have room, and send it to them.
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from multiprocessing.connection import wait
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, OperationalError, close_old_connections, connection, connections

from diagnostics import metrics
from diagnostics.db_errors import error_code, is_connection_lost, is_retryable_contention
from diagnostics.db_session import ensure_clean_session
from tasks import claims, worker_registry
from tasks.models import QueueConfig, TaskQueue, TaskStatus
from tasks.outcomes import Outcome, OutcomeKind, bound_error
from tasks.worker_pool import ChildProcess, TaskSpec, parse_done

logger = logging.getLogger("taskhub.worker")

T = TypeVar("T")

MAX_WAIT = 0.5  # longest a round sleeps, so timers and shutdown() from another thread are seen
FLUSH_DELAY = 0.05  # outcomes wait at most this long for a fuller batch
PROGRESS_WRITE_INTERVAL = 1.0
PREFETCH_SECONDS = 0.1  # each child is sent about this much work ahead (see _depth)
IDLE_BACKOFF_START = 0.05
DB_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# Too many connections (server-wide, per user): the server is up but full for now.
TRANSIENT_CODES = frozenset({1040, 1203})


@dataclass
class _Held:
    """A task this worker has claimed and not yet recorded or handed back."""

    task: TaskQueue
    lease_seconds: int
    lease_deadline: float  # monotonic: the lease in the database ends then unless renewed
    child: ChildProcess | None = None
    cancel_requested: bool = False


class Worker:
    """Run tasks from the named queues (all when empty) until shut down, or once idle in burst mode."""

    def __init__(
        self,
        *,
        queues: Sequence[str] = (),
        concurrency: int = 1,
        burst: bool = False,
        max_tasks: int | None = None,
        poll_interval: float | None = None,
        batch_size: int | None = None,
        prefetch: int | None = None,
    ) -> None:
        self.queue_names = list(queues)
        self.concurrency = concurrency
        self.burst = burst
        self.max_tasks = max_tasks
        self.poll_interval = poll_interval or settings.TASKHUB_POLL_INTERVAL_SECONDS
        self.batch_size = batch_size or settings.TASKHUB_CLAIM_BATCH_SIZE
        self.prefetch = prefetch  # tasks queued per child; None = adapt to how long tasks take
        self.heartbeat_seconds = settings.TASKHUB_WORKER_HEARTBEAT_SECONDS
        self.grace_seconds = settings.TASKHUB_SHUTDOWN_GRACE_SECONDS
        self.worker_id = worker_registry.new_worker_id()
        self.processed = 0
        self._held: dict[int, _Held] = {}
        self._ready: deque[int] = deque()  # claimed, not yet sent to a child
        self._results: list[tuple[TaskQueue, Outcome]] = []
        self._results_since = 0.0
        self._to_release: set[int] = set()  # held tasks to hand back
        self._progress: dict[int, tuple[int, str]] = {}
        self._next_progress_write = 0.0
        self._children: list[ChildProcess] = []
        self._queues: dict[int, QueueConfig] = {}
        self._avg_seconds: float | None = None
        self._next_claim = 0.0
        self._idle_rounds = 0
        self._nothing_runnable = False
        self._next_heartbeat = 0.0
        self._renew_at = float("inf")
        self._db_retry_at = 0.0
        self._db_failures = 0
        self._stop_reason: str | None = None
        self._stopping = False
        self._grace_deadline = float("inf")
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._saved_signals: dict[int, object] = {}

    # --- Public interface ------------------------------------------------------------------

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Start, run rounds until done, then hand back what is left and unregister."""
        try:
            self.start(install_signal_handlers=install_signal_handlers)
            while self.run_one():
                pass
        finally:
            self.close()

    def start(self, *, install_signal_handlers: bool = False) -> None:
        """Check the database, register this worker and start its child processes."""
        for module in settings.TASKHUB_EXTRA_HANDLER_MODULES:
            import_module(module)
        connection.ensure_connection()
        claims.ensure_skip_locked(connection)
        worker_registry.worker_register(worker_id=self.worker_id, queues=self.queue_names, concurrency=self.concurrency)
        if install_signal_handlers:
            self._install_signal_handlers()
        for _ in range(self.concurrency):
            self._spawn()
        logger.info(
            "worker %s started: queues=%s concurrency=%d batch=%d%s",
            self.worker_id,
            ",".join(self.queue_names) or "all",
            self.concurrency,
            self.batch_size,
            " burst" if self.burst else "",
        )

    def run_one(self, timeout: float | None = None) -> bool:
        """Do one round (see the module docstring); return False once the worker is done."""
        self._wait(self._wait_timeout() if timeout is None else timeout)
        self._collect()
        self._enforce_deadlines()
        if self._stop_reason and not self._stopping:
            self._begin_stop()
        self._flush_results()
        self._flush_releases()
        self._flush_progress()
        self._maintain()
        if not self._stopping:
            self._claim()
            self._dispatch()
        return not self._done()

    def shutdown(self, reason: str = "shutdown requested") -> None:
        """Stop claiming; running tasks get the grace period, the others go back to the queue."""
        if self._stop_reason is None:
            self._stop_reason = reason

    def close(self) -> None:
        """Stop the children, hand back what is still held, unregister; safe to call twice."""
        for child in self._children:
            if not child.dead:
                child.kill()
        recording = {task.pk for task, _ in self._results}
        self._to_release.update(pk for pk in self._held if pk not in recording)
        self._children = []
        self._db_retry_at = 0.0
        self._flush_results(force=True)
        self._flush_releases()
        self._db_call("unregister", lambda: worker_registry.worker_unregister(worker_id=self.worker_id))
        self._restore_signal_handlers()
        connections.close_all()
        logger.info("worker %s stopped: %d tasks processed", self.worker_id, self.processed)

    # --- Children ----------------------------------------------------------------------------

    def _spawn(self) -> None:
        # A forked child must not share this process's database sockets.
        connections.close_all()
        self._children.append(ChildProcess(worker_id=self.worker_id, siblings=self._children))

    def _collect(self) -> None:
        for child in list(self._children):
            self._handle_messages(child, child.receive())
            if child.dead or not child.process.is_alive():
                self._handle_messages(child, child.receive())  # it wrote these before it died
                self._on_child_exit(child)

    def _handle_messages(self, child: ChildProcess, messages: list[tuple]) -> None:
        for message in messages:
            if message[0] == "progress":
                if message[1] in self._held:
                    self._progress[message[1]] = (message[2], message[3])
                continue
            done = parse_done(message)
            task_id = done.outcome.task_id
            child.task_done(task_id, done.finished)
            elapsed = max(done.finished - done.started, 0.0)
            self._avg_seconds = elapsed if self._avg_seconds is None else 0.8 * self._avg_seconds + 0.2 * elapsed
            held = self._held.get(task_id)
            if held is not None:
                held.child = None
                self._add_result(held.task, done.outcome)

    def _on_child_exit(self, child: ChildProcess) -> None:
        self._children.remove(child)
        child.join(1)
        pending = list(child.outstanding)
        if child.stopping:
            self._to_release.update(pending)
            return
        logger.error(
            "worker process %s exited unexpectedly (exit code %s); replacing it", child.pid, child.process.exitcode
        )
        if pending and child.current_started is not None:
            self._fail_current(
                pending.pop(0), f"the worker process running it died (exit code {child.process.exitcode})"
            )
        self._requeue(pending)
        if not self._stopping:
            self._spawn()

    def _kill_and_replace(self, child: ChildProcess) -> list[int]:
        """Kill `child`; return its unfinished tasks (the running one first)."""
        self._handle_messages(child, child.receive())
        child.kill()
        self._handle_messages(child, child.receive())
        self._children.remove(child)
        if not self._stopping:
            self._spawn()
        return list(child.outstanding)

    def _fail_current(self, task_id: int, error: str) -> None:
        held = self._held.get(task_id)
        if held is not None:
            held.child = None
            self._add_result(held.task, Outcome(task_id, OutcomeKind.ERROR, error=error))

    def _requeue(self, task_ids: list[int]) -> None:
        for task_id in reversed(task_ids):
            if task_id in self._held:
                self._held[task_id].child = None
                self._ready.appendleft(task_id)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in list(self._children):
            if not child.outstanding or child.current_started is None:
                continue
            held = self._held.get(child.outstanding[0])
            if held is None:  # dropped after a lost lease: the child must not go on with it
                self._requeue(self._kill_and_replace(child)[1:])
                continue
            timeout = self._queues[held.task.queue_id].task_timeout_seconds
            if now < min(child.current_started + timeout, held.lease_deadline):
                continue
            running_id = child.outstanding[0]
            unfinished = self._kill_and_replace(child)
            if not unfinished or unfinished[0] != running_id:
                self._requeue(unfinished)  # it finished just in time; the next one was cut short
                continue
            if now >= held.lease_deadline:
                logger.warning("task %s: lease could not be renewed in time; stopped it and let it go", running_id)
                self._drop(running_id)
            else:
                logger.warning(
                    "task %s (%s) ran past its timeout of %ss: worker process %s killed and replaced",
                    running_id,
                    held.task.task_type,
                    timeout,
                    child.pid,
                )
                self._fail_current(
                    running_id, f"TaskTimeout: ran longer than the queue's task timeout ({timeout}s); stopped"
                )
            self._requeue(unfinished[1:])
        for task_id in [pk for pk in self._ready if now >= self._held[pk].lease_deadline]:
            self._ready.remove(task_id)
            self._drop(task_id)

    def _drop(self, task_id: int) -> None:
        """Forget a task whose lease this worker lost; another worker takes it back."""
        self._held.pop(task_id, None)
        self._progress.pop(task_id, None)

    def _dispatch(self) -> None:
        if not self._ready:
            return
        depth = self._depth()
        now = time.monotonic()
        children = sorted((c for c in self._children if not c.dead), key=lambda c: len(c.outstanding))
        for index, child in enumerate(children):
            share = -(-len(self._ready) // (len(children) - index))  # ceil: spread the batch evenly
            take = min(depth - len(child.outstanding), share)
            if take <= 0:
                continue
            specs = []
            for _ in range(take):
                held = self._held[self._ready.popleft()]
                held.child = child
                task = held.task
                specs.append(TaskSpec(task.pk, task.task_type, task.payload, task.attempts, held.cancel_requested))
            child.send_tasks(specs, now)

    def _depth(self) -> int:
        """Return how many tasks each child may have queued: ~PREFETCH_SECONDS of work, at least 1."""
        if self.prefetch:
            return self.prefetch
        if self._avg_seconds is None:
            return 1
        return max(1, min(2 * self.batch_size, int(PREFETCH_SECONDS / max(self._avg_seconds, 1e-6))))

    # --- Database work -----------------------------------------------------------------------

    def _add_result(self, task: TaskQueue, outcome: Outcome) -> None:
        if not self._results:
            self._results_since = time.monotonic()
        self._results.append((task, outcome))

    def _flush_results(self, *, force: bool = False) -> None:
        if not self._results:
            return
        busy = any(child.outstanding for child in self._children)
        waited = time.monotonic() - self._results_since
        if not (force or self._stopping or not busy or len(self._results) >= self.batch_size or waited >= FLUSH_DELAY):
            return
        batch = self._results
        last_progress = {task.pk: self._progress.pop(task.pk) for task, _ in batch if task.pk in self._progress}
        if last_progress and self._db_call("writing progress", lambda: self._write_progress(last_progress)) is None:
            self._progress.update(last_progress)
            return
        cancels = [task.pk for task, _ in batch if task.pk in self._held and self._held[task.pk].cancel_requested]
        recorded = self._db_call("recording outcomes", lambda: self._record(batch, cancels))
        if recorded is None:
            return
        self._results = []
        for task, _ in batch:
            self._held.pop(task.pk, None)
        self.processed += len(batch)
        for entry in recorded:
            _log_outcome(entry)
        ensure_clean_session(context_id=f"worker-{self.worker_id}")

    def _record(self, batch: list[tuple[TaskQueue, Outcome]], cancels: list[int]) -> list[claims.Recorded]:
        """Record a batch; if the database refuses it, record one by one so one bad row fails alone."""
        try:
            return claims.record_outcomes(
                batch, worker_id=self.worker_id, queues=self._queues, cancel_requested=cancels
            )
        except DatabaseError as exc:
            if _transient(exc):
                raise
            logger.error("could not record %d outcomes together (%s); recording them one by one", len(batch), exc)
        recorded: list[claims.Recorded] = []
        for task, outcome in batch:
            try:
                recorded += claims.record_outcomes(
                    [(task, outcome)], worker_id=self.worker_id, queues=self._queues, cancel_requested=cancels
                )
            except DatabaseError as exc:
                if _transient(exc):
                    raise
                error = bound_error(f"the worker could not store this task's outcome: {exc}")
                failed = Outcome(task.pk, OutcomeKind.FAILED, error=error)
                recorded += claims.record_outcomes([(task, failed)], worker_id=self.worker_id, queues=self._queues)
        return recorded

    def _flush_releases(self) -> None:
        pending = [self._held[pk].task for pk in self._to_release if pk in self._held]
        if not pending:
            self._to_release.clear()
            return
        released = self._db_call("handing back tasks", lambda: claims.release_tasks(pending))
        if released is None:
            return
        logger.info("handed back %d unfinished tasks to the queue", released)
        for task in pending:
            self._held.pop(task.pk, None)
        self._to_release.clear()

    def _flush_progress(self) -> None:
        now = time.monotonic()
        if not self._progress or now < self._next_progress_write:
            return
        reports = self._progress
        if self._db_call("writing progress", lambda: self._write_progress(reports)) is not None:
            self._progress = {}
            self._next_progress_write = now + PROGRESS_WRITE_INTERVAL

    def _write_progress(self, reports: dict[int, tuple[int, str]]) -> bool:
        for task_id, (percent, message) in reports.items():
            TaskQueue.objects.held_by(self.worker_id).filter(pk=task_id).update(
                progress=percent, progress_message=message
            )
        return True

    def _maintain(self) -> None:
        now = time.monotonic()
        beat = now >= self._next_heartbeat
        if not self._held:
            self._renew_at = float("inf")
        if not beat and now < self._renew_at:
            return
        if self._held and self._db_call("renewing leases", self._renew_leases) is None:
            return
        if not beat:
            return
        self._next_heartbeat = now + self.heartbeat_seconds
        self._db_call("heartbeat", self._heartbeat)

    def _renew_leases(self) -> bool:
        started = time.monotonic()
        recording = {task.pk for task, _ in self._results}
        held = [entry.task for entry in self._held.values()]
        leases = {entry.task.queue_id: entry.lease_seconds for entry in self._held.values()}
        check = claims.renew_leases(worker_id=self.worker_id, tasks=held, lease_seconds=leases)
        self._renew_at = float("inf")
        cancels: dict[ChildProcess, list[int]] = {}
        for task_id, entry in list(self._held.items()):
            if task_id not in check.held:
                if task_id not in recording:
                    logger.warning("task %s was taken back from this worker (lease lost); letting it go", task_id)
                    self._drop(task_id)
                continue
            entry.lease_deadline = started + entry.lease_seconds
            self._renew_at = min(self._renew_at, started + entry.lease_seconds / 2)
            if task_id in check.cancel_requested and not entry.cancel_requested:
                entry.cancel_requested = True
                if entry.child is not None:
                    cancels.setdefault(entry.child, []).append(task_id)
        for child, task_ids in cancels.items():
            child.send_cancel(task_ids)
        return True

    def _heartbeat(self) -> bool:
        worker_registry.worker_heartbeat(
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
                ", ".join(f"#{t.pk} {t.status}" for t in recovered),
            )
        pruned = worker_registry.workers_prune_stale()
        if pruned:
            logger.info("pruned %d stale worker rows", pruned)
        return True

    def _claim(self) -> None:
        now = time.monotonic()
        room = self._room()
        if room <= 0 or (now < self._next_claim and not (self.burst and not self._held)):
            return

        def claim() -> claims.Claim:
            close_old_connections()
            queues = claims.runnable_queues(self.queue_names)
            self._queues.update((queue.pk, queue) for queue in queues)
            return claims.claim_tasks(worker_id=self.worker_id, queues=queues, limit=room)

        had_work = bool(self._held)
        result = self._db_call("claiming", claim)
        if result is None:
            return
        for task in result.tasks:
            lease = self._queues[task.queue_id].task_timeout_seconds
            self._held[task.pk] = _Held(task, lease_seconds=lease, lease_deadline=now + lease)
            self._renew_at = min(self._renew_at, now + lease / 2)
            self._ready.append(task.pk)
        if result.tasks:
            self._idle_rounds = 0
            self._next_claim = now
        else:
            self._idle_rounds += 1
            step = min(self.poll_interval, IDLE_BACKOFF_START * 2**self._idle_rounds)
            self._next_claim = now + random.uniform(step / 2, step)
        self._nothing_runnable = not result.tasks and not result.contended and not had_work

    def _room(self) -> int:
        """Return how many tasks to claim now (0 while the children are well supplied)."""
        depth = self._depth()
        active = len(self._held) - len(self._results) - len(self._to_release)
        room = self.concurrency * depth - active
        if self.max_tasks is not None:
            room = min(room, self.max_tasks - self.processed - len(self._held))
        idle_child = not self._ready and any(not child.outstanding for child in self._children)
        threshold = 1 if idle_child else max(1, min(self.batch_size, self.concurrency * depth) // 2)
        return min(room, self.batch_size) if room >= threshold else 0

    def _db_call(self, what: str, work: Callable[[], T]) -> T | None:
        """Run `work`; on a lost or unavailable database log it, back off and return None."""
        if time.monotonic() < self._db_retry_at:
            return None
        try:
            result = work()
        except DatabaseError as exc:
            if not _transient(exc):
                raise
            delay = DB_RETRY_DELAYS[min(self._db_failures, len(DB_RETRY_DELAYS) - 1)]
            self._db_failures += 1
            self._db_retry_at = time.monotonic() + delay
            metrics.DB_ERRORS.labels(kind="worker").inc()
            if is_connection_lost(exc):
                metrics.DB_RECONNECTS.inc()
            logger.warning("database unavailable while %s (%s); reconnecting in %.1fs", what, exc, delay)
            _discard_connection()
            return None
        self._db_failures = 0
        return result

    # --- Stopping ----------------------------------------------------------------------------

    def _begin_stop(self) -> None:
        self._stopping = True
        self._grace_deadline = time.monotonic() + self.grace_seconds
        running = sum(1 for child in self._children if child.current_started is not None)
        logger.info(
            "stopping (%s): waiting up to %ss for %d running tasks, handing back %d not started",
            self._stop_reason,
            self.grace_seconds,
            running,
            len(self._held) - running - len(self._results),
        )
        self._to_release.update(self._ready)
        self._ready.clear()
        for child in self._children:
            child.send_stop()

    def _done(self) -> bool:
        now = time.monotonic()
        if self._stopping:
            if now >= self._grace_deadline:
                for child in list(self._children):
                    if child.current_started is not None:
                        logger.warning("grace period over: handing back task %s", child.outstanding[0])
                    self._to_release.update(self._kill_and_replace(child))
            if self._children:
                return False
            return not (self._held or self._results) or now >= self._grace_deadline
        idle = not (self._held or self._results or self._to_release)
        if idle and self.burst and self._nothing_runnable:
            self.shutdown("burst: nothing left to run")
        elif idle and self.max_tasks is not None and self.processed >= self.max_tasks:
            self.shutdown(f"--max-tasks {self.max_tasks} reached")
        return False

    def _wait(self, timeout: float) -> None:
        sources: list = [child.conn for child in self._children if not child.dead]
        if self._wakeup is not None:
            sources.append(self._wakeup[0])
        if not sources:
            time.sleep(timeout)
            return
        ready = wait(sources, timeout)
        if self._wakeup is not None and self._wakeup[0] in ready:
            try:
                self._wakeup[0].recv(4096)
            except BlockingIOError:
                pass

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        moments = [self._next_heartbeat, self._renew_at, self._grace_deadline]
        if self._results:
            moments.append(self._results_since + FLUSH_DELAY)
        if self._progress:
            moments.append(self._next_progress_write)
        if self._to_release or self._stop_reason and not self._stopping:
            moments.append(now)
        if not self._stopping and self._room() > 0:
            moments.append(self._next_claim)
        for child in self._children:
            if child.outstanding and child.current_started is not None and child.outstanding[0] in self._held:
                held = self._held[child.outstanding[0]]
                timeout = self._queues[held.task.queue_id].task_timeout_seconds
                moments.append(min(child.current_started + timeout, held.lease_deadline))
        moments.append(max(now, self._db_retry_at) + MAX_WAIT)
        return min(max(min(moments) - now, 0.0), MAX_WAIT)

    def _install_signal_handlers(self) -> None:
        self._wakeup = socket.socketpair()
        for end in self._wakeup:
            end.setblocking(False)
        self._saved_signals[-1] = signal.set_wakeup_fd(self._wakeup[1].fileno())
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._saved_signals[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if self._wakeup is None:
            return
        for signum, handler in self._saved_signals.items():
            if signum == -1:
                signal.set_wakeup_fd(handler)  # type: ignore[arg-type]
            else:
                signal.signal(signum, handler)  # type: ignore[arg-type]
        for end in self._wakeup:
            end.close()
        self._wakeup = None

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only set a flag: the loop logs and acts on it (logging here could deadlock).
        self.shutdown(signal.Signals(signum).name)


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
