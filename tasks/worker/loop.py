"""The worker: a parent process that claims, records and keeps leases; child processes run handlers.

One round of `Worker.run_one()`:
    1. wait for reports from the children (or a signal, or the next timer);
    2. collect them: outcomes, progress, children that exited;
    3. kill a child whose task outlived its timeout (the task is retried or failed) and replace it;
    4. record the finished batch and claim the next (when the children run low) in one
       transaction; hand back what must go back; write progress at most once a second;
    5. renew leases (half-way through them); each heartbeat, refresh the worker row (its answer
       says whether staff asked this worker to drain: then it claims nothing more, finishes what
       it holds and exits), then take back the tasks of workers that stopped renewing their
       leases and prune those workers' rows; once an hour, roll the console's minute statistics
       up into hours (`hour_stats.roll_up_hours`; not while lean: an idle worker adds no minutes);
    6. at most once a second, fire the schedules that are due (`tasks.schedules`: every worker
       does, a unique key decides which one creates each fire time's task);
    7. send claimed tasks to the children.

An idle worker claims again after a jittered back-off up to the poll interval, or at once when
woken (`tasks.wakeups`: with `TASKHUB_WAKEUP_URL`, a Redis subscription joins the wait of step
1), and never later than the run_at of the next scheduled task of its queues (read by the claim,
or the look, that found nothing due). While wake-ups are live an idle worker is lean: each poll
is one statement, the look (`db.look`: the next run_at, schedule fire time, lease end and stale
worker row, in one SELECT) or, in its turn, the heartbeat; steps 5 and 6 then wait for the
moments the look read.

What the worker holds is kept in its book (`held.HeldTasks`, no database); every round trip
goes through `db.WorkerDatabase`; the children are `children.Pool`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import time
from collections.abc import Sequence

from django.conf import settings
from django.utils import timezone

from tasks import wakeups
from tasks.outcomes import Outcome, OutcomeKind
from tasks.worker.children import ChildProcess, Pool
from tasks.worker.db import Claim, WorkerDatabase
from tasks.worker.held import HeldTasks
from tasks.worker.messages import parse_done
from tasks.worker.row import new_worker_id, resident_bytes
from tasks.worker.signals import StopSignals

logger = logging.getLogger("taskhub.worker")

MAX_WAIT = 0.5  # longest a round sleeps, so timers and shutdown() from another thread are seen
FLUSH_DELAY = 0.05  # outcomes wait at most this long for a fuller batch
PREFETCH_SECONDS = 0.1  # each child is sent about this much work ahead (see _depth)
IDLE_BACKOFF_START = 0.05
POLL_JITTER = 0.1  # with wake-ups live, an idle worker claims every 1 to 1.1 poll intervals
# What a killed attempt's error history names as its exception (classes in tasks.errors).
TIMEOUT_EXCEPTION = "tasks.errors.TaskTimeout"
LOST_EXCEPTION = "tasks.errors.WorkerLost"


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
        # Idle with wake-ups live, a third of the stale limit: two beats may be missed before the
        # row counts as stale.
        self.idle_heartbeat_seconds = max(self.heartbeat_seconds, settings.TASKHUB_WORKER_STALE_SECONDS / 3)
        self.grace_seconds = max(0.0, settings.TASKHUB_SHUTDOWN_GRACE_SECONDS)
        self.worker_id = new_worker_id()
        self.held = HeldTasks()
        self.db = WorkerDatabase(worker_id=self.worker_id, queue_names=self.queue_names, concurrency=concurrency)
        self.pool = Pool(worker_id=self.worker_id, size=concurrency)
        self._avg_seconds: float | None = None
        self._next_claim = 0.0
        self._idle_claims = 0
        self._nothing_runnable = False
        self._run_at_due = False  # the next claim is for a scheduled task's run_at (no look first)
        self._next_run_at = math.inf  # when the next scheduled task of its queues is due (monotonic)
        self._beat_took_turn = False  # the last idle poll was the heartbeat's (the next one looks)
        self._next_heartbeat = 0.0
        self._stop_reason: str | None = None
        self._stopping = False
        self._draining = False  # staff asked this worker to drain: claim nothing more, finish, exit
        self._grace_deadline = float("inf")
        self._signals = StopSignals()
        self._wakeups = wakeups.Listener(settings.TASKHUB_WAKEUP_URL, self.queue_names) if wakeups.enabled() else None

    @property
    def processed(self) -> int:
        """Attempts this worker has run and recorded."""
        return self.held.processed()

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
        self.db.ensure_usable()
        self.db.register()
        if install_signal_handlers:
            self._signals.install(self.shutdown)
        self.pool.fill()
        if self._wakeups is not None:
            self._wakeups.start()
        logger.info(
            "worker %s started: queues=%s concurrency=%d batch=%d%s wake-ups=%s",
            self.worker_id,
            ",".join(self.queue_names) or "all",
            self.concurrency,
            self.batch_size,
            " burst" if self.burst else "",
            wakeups.safe_url(self._wakeups.url) if self._wakeups else "off (polling)",
        )

    def run_one(self, timeout: float | None = None) -> bool:
        """Do one round (see the module docstring); return False once the worker is done."""
        sources = [*self.pool.pipes(), self._wakeups] if self._wakeups is not None else self.pool.pipes()
        self._signals.wait(sources, self._wait_timeout() if timeout is None else timeout)
        self._take_wakeups()
        self._collect()
        self._enforce_deadlines()
        if self._stop_reason and not self._stopping:
            self._begin_stop()
        self._record_and_claim()
        self.db.hand_back(self.held)
        self.db.flush_progress(self.held)
        self._maintain()
        if not self._stopping:
            if not self._draining:
                self.db.fire_schedules()
            self.pool.dispatch(self.held, self._depth(), time.monotonic())
        self.pool.publish_deadlines(self.held)
        return not self._done()

    def shutdown(self, reason: str = "shutdown requested") -> None:
        """Stop claiming; running tasks get the grace period, the others go back to the queue."""
        if self._stop_reason is None:
            self._stop_reason = reason

    def close(self) -> None:
        """Kill any child left, hand back what is still held, unregister; safe to call twice."""
        for child in self.pool:
            self._handle(self.pool.kill(child))
        self.held.release_all_unfinished()
        self.db.retry_now()  # these writes are the last: worth a try even in a back-off
        self.db.record_and_claim(self.held, flush=True, claim_limit=0)
        self.db.hand_back(self.held)
        self.db.unregister()
        self._signals.restore()
        if self._wakeups is not None:
            self._wakeups.stop()
        self.db.disconnect()
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
                self.held.add_progress(*message[1:])
                continue
            done = parse_done(message)
            elapsed = max(done.finished - done.started, 0.0)
            self._avg_seconds = elapsed if self._avg_seconds is None else 0.8 * self._avg_seconds + 0.2 * elapsed
            self.held.add_outcome(done.outcome)

    def _on_child_exit(self, child: ChildProcess, last_words: list[tuple]) -> None:
        self._handle(last_words)
        unfinished = child.unfinished()
        if child.stopped_cleanly():
            self.held.release_later(unfinished)  # never started: it stopped between tasks
            return
        running = unfinished.pop(0) if unfinished and child.was_running() else None
        if (
            running is not None
            and child.exitcode == -signal.SIGALRM
            and self.held.lease_expired(running, time.monotonic())
        ):
            # Its lease watchdog (child.py): this worker could not renew in time, e.g. it was frozen.
            logger.warning(
                "task %s: its lease ran out before this worker renewed it; its worker process stopped it "
                "and the task is let go",
                running,
            )
            self.held.drop(running)
        else:
            logger.error("worker process %s exited unexpectedly (exit code %s)", child.pid, child.exitcode)
            if running is not None:
                died = f"the worker process running it died (exit code {child.exitcode})"
                self.held.add_outcome(Outcome(running, OutcomeKind.RETRYABLE, error=died, exception=LOST_EXCEPTION))
        if self._stopping:
            self.held.release_later(unfinished)
        else:
            self.held.requeue_front(unfinished)
            self.pool.fill()

    def _enforce_deadlines(self) -> None:
        """Kill a child running a task past its timeout (or past a lease that could not be renewed)."""
        now = time.monotonic()
        for child, task_id, started in self.pool.running():
            deadline = self.held.deadline_of(task_id, started)
            if deadline is not None and now < deadline:
                continue
            self._handle(child.receive())  # it may have just finished
            if not child.is_running(task_id):
                continue
            self._handle(self.pool.kill(child))
            unfinished = child.unfinished()
            if unfinished and unfinished[0] != task_id:
                # It finished in the last instant and the next task was cut short.
                cut_short = Outcome(
                    unfinished[0], OutcomeKind.RETRYABLE, error="interrupted: its worker process was killed"
                )
                self.held.add_outcome(cut_short)
            elif unfinished and self.held.lease_expired(task_id, now):
                # Dropped after a lost lease, or about to be: another worker takes it back.
                logger.warning("task %s: its lease could not be renewed; stopped it and let it go", task_id)
                self.held.drop(task_id)
            elif unfinished:
                timeout = self.held.timeout_of(task_id)
                logger.warning(
                    "task %s (%s) ran past its timeout of %ss: worker process %s killed and replaced",
                    task_id,
                    self.held.task_type_of(task_id),
                    timeout,
                    child.pid,
                )
                error = f"TaskTimeout: ran longer than its task timeout ({timeout}s); stopped"
                self.held.add_outcome(Outcome(task_id, OutcomeKind.RETRYABLE, error=error, exception=TIMEOUT_EXCEPTION))
            self.held.requeue_front(unfinished[1:])
            if not self._stopping:
                self.pool.fill()
        for task_id in self.held.ready_past_lease(now):
            logger.warning("task %s: its lease could not be renewed; letting it go", task_id)
            self.held.drop(task_id)

    def _depth(self) -> int:
        """Return how many tasks each child may have queued: ~PREFETCH_SECONDS of work, at least 1."""
        if self.prefetch:
            return self.prefetch
        if self._avg_seconds is None:
            return 1
        return max(1, min(2 * self.batch_size, int(PREFETCH_SECONDS / max(self._avg_seconds, 1e-6))))

    # --- Database rounds -----------------------------------------------------------------------

    def _flush_due(self) -> bool:
        waiting = self.held.outcomes_waiting()
        if not waiting:
            return False
        full = waiting >= self.batch_size
        waited = time.monotonic() - self.held.outcomes_waiting_since() >= FLUSH_DELAY
        return full or waited or self._stopping or not self.pool.busy()

    def _maintain(self) -> None:
        now = time.monotonic()
        if self._lean():
            # The idle polls take turns with the heartbeat (`_peek`); this one is a safety net.
            if now >= self._lean_heartbeat_at():
                self._beat(now)
            self.db.due_upkeep()
            return
        beat = now >= self._next_heartbeat
        if self.held.renewal_due(now, heartbeat=beat):
            cancelled = self.db.renew_leases(self.held)
            if cancelled is None:
                return
            self.pool.pass_on_cancels(cancelled)
        if beat:
            self._next_heartbeat = now + self.heartbeat_seconds
            self._heartbeat()
            self.db.recover_lost_tasks()
            self.db.prune_dead_workers()
            self.db.roll_up_hours()

    def _lean(self) -> bool:
        """Return True while idle with wake-ups live: the database is asked once per poll interval at most.

        Each poll is one statement: the look (`db.look`, which also says when a schedule fires,
        a lease is lost or a worker row turns stale) or, in its turn, the heartbeat.
        """
        live = self._wakeups is not None and self._wakeups.live
        return live and not self.burst and not self.held and not self._stopping

    def _beat(self, now: float) -> None:
        """Refresh this worker's row only (idle: lost leases and stale rows follow the look)."""
        self._next_heartbeat = now + self.idle_heartbeat_seconds
        self._heartbeat()

    def _heartbeat(self) -> None:
        """Refresh this worker's row (with its memory); the answer says whether staff asked it to drain."""
        memory = resident_bytes([os.getpid(), *(child.pid for child in self.pool if child.pid)])
        draining = self.db.heartbeat(processed=self.held.processed(), memory=memory, draining=self._draining)
        if draining and not self._draining:
            self._draining = True
            logger.info(
                "worker %s: drain requested: claiming nothing more, finishing the %d tasks it holds, then exiting",
                self.worker_id,
                len(self.held),
            )

    def _lean_heartbeat_at(self) -> float:
        """Return when an idle worker beats on its own if no poll took the turn (polls longer than its beat)."""
        return self._next_heartbeat + self.idle_heartbeat_seconds

    def _record_and_claim(self) -> None:
        """Record finished tasks and claim more, together when both are due (one commit)."""
        flush = self._flush_due()
        limit = 0 if self._stopping else self._claim_limit()
        if not (flush or limit):
            return
        if limit and not flush and self._may_peek() and not self._peek():
            return
        had_work = self.held.active() > 0
        claim = self.db.record_and_claim(self.held, flush=flush, claim_limit=limit)
        if claim is None:
            return
        now = time.monotonic()
        if claim.tasks:
            self._idle_claims = 0
            self._next_claim = now
            self._run_at_due, self._next_run_at = False, math.inf
        else:
            self._idle_claims += 1
            self._next_claim = now + self._idle_wait(claim)
        self._nothing_runnable = not (claim.tasks or claim.contended or claim.partial or claim.held_back or had_work)

    def _idle_wait(self, claim: Claim) -> float:
        """Return how long to wait before claiming again after a claim that found nothing.

        While wake-ups are live, the whole poll interval (a new task wakes the worker at once);
        otherwise a jittered back-off doubling from IDLE_BACKOFF_START up to the poll interval.
        Never past the run_at of the next scheduled task, nor past the next token of a rate limit
        that held tasks back.
        """
        if self._wakeups is not None and self._wakeups.live:
            wait = random.uniform(self.poll_interval, self.poll_interval * (1 + POLL_JITTER))
        else:
            step = min(self.poll_interval, IDLE_BACKOFF_START * 2**self._idle_claims)
            wait = random.uniform(step / 2, step)
        if claim.retry_in is not None:
            # A rate limit held tasks back: come back when its bucket has a token again.
            wait = min(wait, max(claim.retry_in, IDLE_BACKOFF_START / 5))
        self._next_run_at = math.inf
        if claim.next_run_at is not None:
            due = (claim.next_run_at - timezone.now()).total_seconds()
            if due <= 0 and (claim.as_of is None or claim.next_run_at <= claim.as_of):
                # Due when the claim looked, yet not claimed: another worker is claiming it this instant.
                due = IDLE_BACKOFF_START
            # Otherwise it came due between the claim's clock reading and now: claim again at once.
            self._next_run_at = time.monotonic() + max(due, 0.0)
        return self._until_run_at(wait)

    def _until_run_at(self, wait: float) -> float:
        """Return `wait`, or less to claim at the next known run_at (then claimed without a look first)."""
        due = self._next_run_at - time.monotonic()
        self._run_at_due = due < wait
        return min(wait, max(due, 0.0))

    def _may_peek(self) -> bool:
        """Return True when a poll may be a look instead of a claim: idle, not woken, wake-ups live.

        Idle: the last claim found nothing; a wake-up starts the count of idle claims again.
        """
        live = self._wakeups is not None and self._wakeups.live
        idle = not self.burst and not self.held and self._idle_claims > 0
        return live and idle and not self._run_at_due

    def _peek(self) -> bool:
        """Look for a due task in one plain read; return True when one is due now (claim it).

        Otherwise wait until the next poll, or the next scheduled task if that comes first. When
        the heartbeat is due, it takes this poll's turn instead.
        """
        now = time.monotonic()
        wait = random.uniform(self.poll_interval, self.poll_interval * (1 + POLL_JITTER))
        if now >= self._next_heartbeat and not self._beat_took_turn:
            # This poll's turn goes to the heartbeat (never two in a row): one statement per poll.
            self._beat(now)
            self._beat_took_turn = True
            self._next_claim = now + self._until_run_at(wait)
            return False
        self._beat_took_turn = False
        found = self.db.look()
        if found is None:
            return False  # the database is away: its back-off applies
        self._next_run_at = math.inf
        if found.run_at is not None:
            due = (found.run_at - timezone.now()).total_seconds()
            if due <= 0:
                return True
            self._next_run_at = time.monotonic() + due
        self._next_claim = time.monotonic() + self._until_run_at(wait)
        return False

    def _take_wakeups(self) -> None:
        """Claim at the next step when a queue of this worker was woken."""
        if self._wakeups is None:
            return
        woken = self._wakeups.take()
        if woken:
            self.db.woken(woken)
            self._idle_claims = 0
            self._next_claim = min(self._next_claim, time.monotonic())

    def _claim_limit(self) -> int:
        if self._draining:
            return 0
        room = self._room()
        backing_off = time.monotonic() < self._next_claim
        if room <= 0 or (backing_off and not (self.burst and self.held.active() == 0)):
            return 0
        return room

    def _room(self) -> int:
        """Return how many tasks to claim now (0 while the children are well supplied)."""
        depth = self._depth()
        room = self.concurrency * depth - self.held.active()
        if self.max_tasks is not None:
            room = min(room, self.max_tasks - self.held.processed() - len(self.held))
        starving = not self.held.ready_count() and self.pool.has_idle_child()
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
            max(self.held.active() - running, 0),
        )
        self.held.release_waiting()
        self.pool.stop()

    def _done(self) -> bool:
        if self._stopping:
            now = time.monotonic()
            if now >= self._grace_deadline:
                for _child, task_id, _started in self.pool.running():
                    logger.warning("grace period over: handing back task %s", task_id)
                for child in self.pool:
                    unfinished = child.unfinished()
                    self._handle(self.pool.kill(child))
                    self.held.release_later(unfinished)
            if len(self.pool):
                return False
            return not self.held or now >= self._grace_deadline
        idle = not self.held
        if idle and self._draining:
            self.shutdown("drained")
        elif idle and self.burst and self._nothing_runnable:
            self.shutdown("burst: nothing left to run")
        elif idle and self.max_tasks is not None and self.held.processed() >= self.max_tasks:
            self.shutdown(f"--max-tasks {self.max_tasks} reached")
        return False

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        # Moments with database work due.
        lean = self._lean()
        heartbeat = self._lean_heartbeat_at() if lean else self._next_heartbeat
        database = [heartbeat, self.held.next_due(now, flush_delay=FLUSH_DELAY)]
        if lean:
            database.append(self.db.due_upkeep_at())
        claiming = not (self._stopping or self._draining)
        if claiming and self._room() > 0:
            database.append(self._next_claim)
        if claiming:
            database.append(self.db.next_tick_at())
        retry_at = self.db.available_at()
        moments = [max(moment, retry_at) for moment in database]  # no spinning while it is away
        moments += [self._grace_deadline, now if self._stop_reason and not self._stopping else now + MAX_WAIT]
        for _, task_id, started in self.pool.running():
            deadline = self.held.deadline_of(task_id, started)
            if deadline is not None:
                moments.append(deadline)
        return min(max(min(moments) - now, 0.0), MAX_WAIT)
