"""The worker: a parent process that claims, records and keeps leases; child processes run handlers.

One round of `Worker.run_one()`:
    1. wait for reports from the children (or a signal, or the next timer);
    2. collect them: outcomes, progress, children that exited;
    3. kill a child whose task outlived its timeout (the task is retried or failed) and replace it;
    4. record the finished batch and claim the next (when the children run low) in one
       transaction; hand back what must go back; write progress at most once a second;
    5. renew leases (half-way through them) and, each heartbeat, refresh the worker row, take
       back expired leases of dead workers and prune their rows;
    6. send claimed tasks to the children.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence

from django.conf import settings
from django.db import connection, connections

from tasks import claims
from tasks.outcomes import Outcome, OutcomeKind
from tasks.worker import row
from tasks.worker.child import parse_done
from tasks.worker.children import ChildProcess, Pool
from tasks.worker.db import Ledger
from tasks.worker.signals import StopSignals

logger = logging.getLogger("taskhub.worker")

MAX_WAIT = 0.5  # longest a round sleeps, so timers and shutdown() from another thread are seen
FLUSH_DELAY = 0.05  # outcomes wait at most this long for a fuller batch
PREFETCH_SECONDS = 0.1  # each child is sent about this much work ahead (see _depth)
IDLE_BACKOFF_START = 0.05


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
        # Floors keep a mistyped setting from turning the worker into a busy loop.
        self.poll_interval = max(0.01, poll_interval or settings.TASKHUB_POLL_INTERVAL_SECONDS)
        self.batch_size = max(1, batch_size or settings.TASKHUB_CLAIM_BATCH_SIZE)
        self.prefetch = prefetch  # tasks queued per child; None = adapt to how long tasks take
        self.heartbeat_seconds = max(0.1, settings.TASKHUB_WORKER_HEARTBEAT_SECONDS)
        self.grace_seconds = max(0.0, settings.TASKHUB_SHUTDOWN_GRACE_SECONDS)
        self.worker_id = row.new_worker_id()
        self.ledger = Ledger(worker_id=self.worker_id, queue_names=self.queue_names, concurrency=concurrency)
        self.pool = Pool(worker_id=self.worker_id, size=concurrency)
        self._avg_seconds: float | None = None
        self._next_claim = 0.0
        self._idle_claims = 0
        self._nothing_runnable = False
        self._next_heartbeat = 0.0
        self._stop_reason: str | None = None
        self._stopping = False
        self._grace_deadline = float("inf")
        self._signals = StopSignals()

    @property
    def processed(self) -> int:
        """Attempts this worker has run and recorded."""
        return self.ledger.processed

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
        connection.ensure_connection()
        claims.ensure_skip_locked(connection)
        row.worker_register(worker_id=self.worker_id, queues=self.queue_names, concurrency=self.concurrency)
        if install_signal_handlers:
            self._signals.install(self.shutdown)
        self.pool.fill()
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
        self._signals.wait(self.pool.pipes(), self._wait_timeout() if timeout is None else timeout)
        self._collect()
        self._enforce_deadlines()
        if self._stop_reason and not self._stopping:
            self._begin_stop()
        self._record_and_claim()
        self.ledger.flush_releases()
        self.ledger.flush_progress()
        self._maintain()
        if not self._stopping:
            self.pool.dispatch(self.ledger.ready, self.ledger.spec, self._depth(), time.monotonic())
        return not self._done()

    def shutdown(self, reason: str = "shutdown requested") -> None:
        """Stop claiming; running tasks get the grace period, the others go back to the queue."""
        if self._stop_reason is None:
            self._stop_reason = reason

    def close(self) -> None:
        """Kill any child left, hand back what is still held, unregister; safe to call twice."""
        ledger = self.ledger
        for child in self.pool:
            self._handle(self.pool.kill(child))
        ledger.to_release.update(pk for pk in ledger.held if pk not in ledger.results)
        ledger.db_retry_at = 0.0
        ledger.sync(flush=True, claim_limit=0)
        ledger.flush_releases()
        ledger.db_call("unregistering", lambda: row.worker_unregister(worker_id=self.worker_id))
        self._signals.restore()
        connections.close_all()
        logger.info("worker %s stopped: %d tasks processed", self.worker_id, self.processed)

    # --- Children ----------------------------------------------------------------------------

    def _collect(self) -> None:
        for child in self.pool:
            self._handle(child.receive())
            if child.has_exited():
                self._on_child_exit(child, self.pool.remove(child))

    def _handle(self, messages: list[tuple]) -> None:
        for message in messages:
            if message[0] == "progress":
                self.ledger.add_progress(*message[1:])
                continue
            done = parse_done(message)
            elapsed = max(done.finished - done.started, 0.0)
            self._avg_seconds = elapsed if self._avg_seconds is None else 0.8 * self._avg_seconds + 0.2 * elapsed
            self.ledger.add_result(done.outcome)

    def _on_child_exit(self, child: ChildProcess, last_words: list[tuple]) -> None:
        self._handle(last_words)
        unfinished = list(child.outstanding)
        if child.stopping and child.exitcode == 0:
            self.ledger.to_release.update(unfinished)  # never started: it stopped between tasks
            return
        logger.error("worker process %s exited unexpectedly (exit code %s)", child.pid, child.exitcode)
        if unfinished and child.current_started is not None:
            died = f"the worker process running it died (exit code {child.exitcode})"
            self.ledger.add_result(Outcome(unfinished.pop(0), OutcomeKind.RETRYABLE, error=died))
        if self._stopping:
            self.ledger.to_release.update(unfinished)
        else:
            self._requeue(unfinished)
            self.pool.fill()

    def _requeue(self, task_ids: list[int]) -> None:
        """Put tasks a child never started back at the front of the line."""
        self.ledger.ready.extendleft(pk for pk in reversed(task_ids) if pk in self.ledger.held)

    def _enforce_deadlines(self) -> None:
        """Kill a child running a task past its timeout (or past a lease that could not be renewed)."""
        now = time.monotonic()
        ledger = self.ledger
        for child, task_id, started in self.pool.running():
            held = ledger.held.get(task_id)
            if held is not None and now < min(started + ledger.timeout_of(task_id), held.lease_deadline):
                continue
            self._handle(child.receive())  # it may have just finished
            if not child.outstanding or child.outstanding[0] != task_id:
                continue
            self._handle(self.pool.kill(child))
            unfinished = list(child.outstanding)
            if unfinished and unfinished[0] != task_id:
                # It finished in the last instant and the next task was cut short.
                cut_short = Outcome(
                    unfinished[0], OutcomeKind.RETRYABLE, error="interrupted: its worker process was killed"
                )
                ledger.add_result(cut_short)
            elif unfinished and (held is None or now >= held.lease_deadline):
                # Dropped after a lost lease, or about to be: another worker takes it back.
                logger.warning("task %s: its lease could not be renewed; stopped it and let it go", task_id)
                ledger.drop(task_id)
            elif unfinished:
                timeout = ledger.timeout_of(task_id)
                logger.warning(
                    "task %s (%s) ran past its timeout of %ss: worker process %s killed and replaced",
                    task_id,
                    held.task.task_type,
                    timeout,
                    child.pid,
                )
                error = f"TaskTimeout: ran longer than the queue's task timeout ({timeout}s); stopped"
                ledger.add_result(Outcome(task_id, OutcomeKind.RETRYABLE, error=error))
            self._requeue(unfinished[1:])
            if not self._stopping:
                self.pool.fill()
        for task_id in [pk for pk in ledger.ready if now >= ledger.held[pk].lease_deadline]:
            logger.warning("task %s: its lease could not be renewed; letting it go", task_id)
            ledger.drop(task_id)

    def _depth(self) -> int:
        """Return how many tasks each child may have queued: ~PREFETCH_SECONDS of work, at least 1."""
        if self.prefetch:
            return self.prefetch
        if self._avg_seconds is None:
            return 1
        return max(1, min(2 * self.batch_size, int(PREFETCH_SECONDS / max(self._avg_seconds, 1e-6))))

    # --- Database rounds -----------------------------------------------------------------------

    def _flush_due(self) -> bool:
        ledger = self.ledger
        if not ledger.results:
            return False
        full = len(ledger.results) >= self.batch_size
        waited = time.monotonic() - ledger.results_since >= FLUSH_DELAY
        return full or waited or self._stopping or not self.pool.busy()

    def _maintain(self) -> None:
        now = time.monotonic()
        beat = now >= self._next_heartbeat
        if not self.ledger.held:
            self.ledger.renew_at = float("inf")
        if self.ledger.held and (beat or now >= self.ledger.renew_at):
            cancelled = self.ledger.renew_leases()
            if cancelled is None:
                return
            self._pass_on_cancels(cancelled)
        if beat:
            self._next_heartbeat = now + self.heartbeat_seconds
            self.ledger.heartbeat()

    def _pass_on_cancels(self, task_ids: list[int]) -> None:
        for child in self.pool:
            wanted = [task_id for task_id in task_ids if task_id in child.outstanding]
            if wanted:
                child.send(("cancel", wanted))

    def _record_and_claim(self) -> None:
        """Record finished tasks and claim more, together when both are due (one commit)."""
        flush = self._flush_due()
        limit = 0 if self._stopping else self._claim_limit()
        if not (flush or limit):
            return
        had_work = self.ledger.active > 0
        claim = self.ledger.sync(flush=flush, claim_limit=limit)
        if claim is None:
            return
        now = time.monotonic()
        if claim.tasks:
            self._idle_claims = 0
            self._next_claim = now
        else:
            self._idle_claims += 1
            step = min(self.poll_interval, IDLE_BACKOFF_START * 2**self._idle_claims)
            self._next_claim = now + random.uniform(step / 2, step)
        self._nothing_runnable = not (claim.tasks or claim.contended or claim.partial or had_work)

    def _claim_limit(self) -> int:
        room = self._room()
        backing_off = time.monotonic() < self._next_claim
        if room <= 0 or (backing_off and not (self.burst and self.ledger.active == 0)):
            return 0
        return room

    def _room(self) -> int:
        """Return how many tasks to claim now (0 while the children are well supplied)."""
        ledger = self.ledger
        depth = self._depth()
        room = self.concurrency * depth - ledger.active
        if self.max_tasks is not None:
            room = min(room, self.max_tasks - ledger.processed - len(ledger.held))
        starving = not ledger.ready and self.pool.has_idle_child()
        threshold = 1 if starving else max(1, min(self.batch_size, self.concurrency * depth) // 2)
        return min(room, self.batch_size) if room >= threshold else 0

    # --- Stopping ----------------------------------------------------------------------------

    def _begin_stop(self) -> None:
        self._stopping = True
        self._grace_deadline = time.monotonic() + self.grace_seconds
        running = sum(1 for _ in self.pool.running())
        logger.info(
            "stopping (%s): waiting up to %ss for %d running tasks, handing back %d not started",
            self._stop_reason,
            self.grace_seconds,
            running,
            max(self.ledger.active - running, 0),
        )
        self.ledger.to_release.update(self.ledger.ready)
        self.ledger.ready.clear()
        self.pool.stop()

    def _done(self) -> bool:
        ledger = self.ledger
        if self._stopping:
            now = time.monotonic()
            if now >= self._grace_deadline:
                for _child, task_id, _started in self.pool.running():
                    logger.warning("grace period over: handing back task %s", task_id)
                for child in self.pool:
                    unfinished = list(child.outstanding)
                    self._handle(self.pool.kill(child))
                    ledger.to_release.update(pk for pk in unfinished if pk not in ledger.results)
            if list(self.pool):
                return False
            return not ledger.held or now >= self._grace_deadline
        idle = not ledger.held
        if idle and self.burst and self._nothing_runnable:
            self.shutdown("burst: nothing left to run")
        elif idle and self.max_tasks is not None and ledger.processed >= self.max_tasks:
            self.shutdown(f"--max-tasks {self.max_tasks} reached")
        return False

    def _wait_timeout(self) -> float:
        ledger = self.ledger
        now = time.monotonic()
        database = [self._next_heartbeat, ledger.renew_at]  # moments with database work due
        if ledger.results:
            database.append(ledger.results_since + FLUSH_DELAY)
        if ledger.progress:
            database.append(ledger.next_progress_write)
        if ledger.to_release:
            database.append(now)
        if not self._stopping and self._room() > 0:
            database.append(self._next_claim)
        moments = [max(moment, ledger.db_retry_at) for moment in database]  # no spinning while it is away
        moments += [self._grace_deadline, now if self._stop_reason and not self._stopping else now + MAX_WAIT]
        for _, task_id, started in self.pool.running():
            if task_id in ledger.held:
                moments.append(min(started + ledger.timeout_of(task_id), ledger.held[task_id].lease_deadline))
        return min(max(min(moments) - now, 0.0), MAX_WAIT)
