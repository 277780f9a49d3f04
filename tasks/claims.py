"""Claiming tasks and recording what became of them: the worker's side of the task table.

Every function here is a short transaction (or a single statement) by primary key, safe to run
from any number of workers at once. Deadlocks and lock-wait timeouts are retried here; a lost
connection is raised to the worker, which reconnects and tries again.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from core.db.errors import is_retryable_contention
from tasks import counters
from tasks.models import QueueConfig, TaskQueue, TaskStatus
from tasks.outcomes import Outcome, OutcomeKind

logger = logging.getLogger("taskhub.worker")

T = TypeVar("T")

CONTENTION_ATTEMPTS = 5
WORKER_LOST = "worker lost"
RECOVERY_BATCH = 100


class UnsupportedDatabase(Exception):
    """The database cannot give workers SKIP LOCKED claims."""


def skip_locked_problem(*, vendor: str, is_mariadb: bool = False, version: tuple[int, ...] = ()) -> str | None:
    """Return why this server cannot run workers (no SKIP LOCKED), or None if it can."""
    if vendor != "mysql":
        return None
    name, minimum = ("MariaDB", (10, 6)) if is_mariadb else ("MySQL", (8, 0, 1))
    if tuple(version[: len(minimum)]) >= minimum:
        return None
    have = ".".join(map(str, version)) or "unknown"
    need = ".".join(map(str, minimum))
    return (
        f"{name} {have} has no SELECT ... FOR UPDATE SKIP LOCKED, which workers need to claim tasks "
        f"without blocking each other; upgrade to {name} {need} or later."
    )


def ensure_skip_locked(connection: BaseDatabaseWrapper) -> None:
    """Raise UnsupportedDatabase when `connection`'s server cannot run workers."""
    if connection.vendor != "mysql":
        return
    problem = skip_locked_problem(
        vendor="mysql", is_mariadb=connection.mysql_is_mariadb, version=tuple(connection.mysql_version)
    )
    if problem:
        raise UnsupportedDatabase(problem)


def retry_delay(*, attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Return seconds to wait before retrying after failed attempt number `attempt` (1-based).

    Exponential (base, 2*base, 4*base, ... up to cap) with "equal jitter": between half and
    all of that step, so retries of many tasks that failed together spread out.
    """
    step = min(cap, base * 2 ** max(attempt - 1, 0))
    return step / 2 + (rng or random).uniform(0, step / 2)


def with_contention_retry(work: Callable[[], T], *, what: str) -> T:
    """Run the transaction `work`, again after a deadlock or lock-wait timeout."""
    for attempt in range(1, CONTENTION_ATTEMPTS + 1):
        try:
            return work()
        except Exception as exc:
            if not is_retryable_contention(exc) or attempt == CONTENTION_ATTEMPTS:
                raise
            logger.info("%s hit lock contention (%s); retrying (%d/%d)", what, exc, attempt, CONTENTION_ATTEMPTS)
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("unreachable")


def runnable_queues(names: Sequence[str] = ()) -> list[QueueConfig]:
    """Return the queues a worker may claim from now: the named ones (or all), not paused."""
    queues = QueueConfig.objects.filter(is_paused=False).order_by("id")
    return list(queues.filter(name__in=names) if names else queues)


@dataclass
class Claim:
    tasks: list[TaskQueue] = field(default_factory=list)
    # True when a limited queue was skipped because another worker was claiming from it:
    # "nothing claimed" then does not mean "nothing runnable".
    contended: bool = False
    # Queues searched that had nothing runnable (or nothing another worker was not claiming).
    empty_queues: set[int] = field(default_factory=set)
    # True when the caller left out some of its queues: "nothing claimed" proves nothing either.
    partial: bool = False


def claim_tasks(*, worker_id: str, queues: Sequence[QueueConfig], limit: int, now: datetime | None = None) -> Claim:
    """Claim up to `limit` runnable tasks from `queues` for `worker_id`, best first."""
    return record_and_claim(worker_id=worker_id, claim_from=queues, limit=limit, now=now)[1]


def _claim(worker_id: str, queues: Sequence[QueueConfig], limit: int, now: datetime) -> Claim:
    """Claim inside the caller's transaction."""
    if limit <= 0 or not queues:
        return Claim()
    budgets, contended = _budgets(queues, limit)
    leases = {queue.pk: queue.task_timeout_seconds for queue in queues}
    tasks, empty = TaskQueue.objects.claim_batch(
        worker_id=worker_id, budgets=budgets, limit=limit, now=now, lease_seconds=leases
    )
    return Claim(tasks=tasks, contended=contended, empty_queues=empty)


def _budgets(queues: Sequence[QueueConfig], limit: int) -> tuple[dict[int, int], bool]:
    """Return how many tasks may be claimed per queue, honouring max_concurrency for all workers.

    A limited queue's row is locked (SKIP LOCKED, in id order) for the rest of the short claim
    transaction, so two workers never both count the same free slots; a queue another worker
    is claiming from right now is skipped this round rather than waited for.
    """
    budgets = {queue.pk: limit for queue in queues if not queue.max_concurrency}
    limited = [queue.pk for queue in queues if queue.max_concurrency]
    if not limited:
        return budgets, False
    locked = dict(
        QueueConfig.objects.filter(pk__in=limited, is_paused=False)
        .order_by("id")
        .select_for_update(skip_locked=True)
        .values_list("id", "max_concurrency")
    )
    running = TaskQueue.objects.running_counts(list(locked))
    for queue_id, max_concurrency in locked.items():
        budgets[queue_id] = max(0, min(limit, max_concurrency - running.get(queue_id, 0)))
    return budgets, len(locked) < len(limited)


@dataclass(frozen=True)
class Recorded:
    task: TaskQueue
    outcome: Outcome
    status: str  # what the task became: a finished status, or pending for a retry


def record_outcomes(
    results: Sequence[tuple[TaskQueue, Outcome]],
    *,
    worker_id: str,
    queues: dict[int, QueueConfig],
    cancel_requested: Iterable[int] = (),
    now: datetime | None = None,
) -> list[Recorded]:
    """Store a batch of `worker_id`'s outcomes in one transaction; return those that applied.

    An outcome applies only while the worker still holds the task (a task whose lease was
    taken back is left alone). Successes are saved in one UPDATE, other outcomes one UPDATE
    each, and the finished tasks are counted once for the whole batch.
    """
    return record_and_claim(
        worker_id=worker_id, results=results, queues=queues, cancel_requested=cancel_requested, now=now
    )[0]


def record_and_claim(
    *,
    worker_id: str,
    results: Sequence[tuple[TaskQueue, Outcome]] = (),
    queues: dict[int, QueueConfig] | None = None,
    cancel_requested: Iterable[int] = (),
    claim_from: Sequence[QueueConfig] = (),
    limit: int = 0,
    now: datetime | None = None,
) -> tuple[list[Recorded], Claim]:
    """Record a batch of outcomes, then claim the next batch: one short transaction, one commit.

    Recording first frees the finished tasks' places under each queue's max_concurrency.
    """
    if not results and (limit <= 0 or not claim_from):
        return [], Claim()
    cancels = set(cancel_requested)
    backoff = {**(queues or {}), **{queue.pk: queue for queue in claim_from}}

    def work() -> tuple[list[Recorded], Claim]:
        moment = now or timezone.now()
        with transaction.atomic():
            recorded = _record(results, worker_id, backoff, cancels, moment) if results else []
            return recorded, _claim(worker_id, claim_from, limit, moment)

    return with_contention_retry(work, what="recording and claiming")


def _record(
    results: Sequence[tuple[TaskQueue, Outcome]],
    worker_id: str,
    queues: dict[int, QueueConfig],
    cancels: set[int],
    now: datetime,
) -> list[Recorded]:
    """Record inside the caller's transaction."""
    if all(outcome.kind is OutcomeKind.SUCCEEDED for _, outcome in results):
        return _record_successes(results, worker_id, now)
    recorded: list[Recorded] = []
    successes: dict[int, object] = {}
    held = TaskQueue.objects.lock_held(worker_id=worker_id, attempts={t.pk: t.attempts for t, _ in results})
    for task, outcome in results:
        if task.pk not in held:
            continue
        if outcome.kind is OutcomeKind.SUCCEEDED:
            # Only this transaction's UPDATE saves it; a retry after a rollback redoes both.
            task.mark_succeeded(result=outcome.result, now=now, save=False)
            successes[task.pk] = outcome.result
        else:
            # A copy: its guarded UPDATE changes the claim fields a retry would need.
            task = copy.copy(task)
            if _apply(task, outcome, queues.get(task.queue_id), task.pk in cancels, now) is None:
                continue
        recorded.append(Recorded(task, outcome, task.status))
    attempts = {task.pk: task.attempts for task, _ in results if task.pk in successes}
    TaskQueue.objects.succeed(worker_id=worker_id, results=successes, attempts=attempts, now=now)
    counters.record_finished([r.task for r in recorded if r.status != TaskStatus.PENDING])
    return recorded


def _record_successes(results: Sequence[tuple[TaskQueue, Outcome]], worker_id: str, now: datetime) -> list[Recorded]:
    """Record a batch of successes (the usual batch) with one guarded UPDATE and no locking read first.

    The UPDATE changes only the tasks this claim still holds; when it changed fewer than asked
    (a lease taken back meanwhile: rare), one SELECT tells which it did finish.
    """
    outcomes = {task.pk: outcome.result for task, outcome in results}
    attempts = {task.pk: task.attempts for task, _ in results}
    changed = TaskQueue.objects.succeed(worker_id=worker_id, results=outcomes, attempts=attempts, now=now)
    if changed == len(outcomes):
        done = set(outcomes)
    else:
        done = TaskQueue.objects.finished_at_by(worker_id=worker_id, pks=list(outcomes), now=now)
    recorded = []
    for task, outcome in results:
        if task.pk in done:
            task.mark_succeeded(result=outcome.result, now=now, save=False)
            recorded.append(Recorded(task, outcome, task.status))
    counters.record_finished([r.task for r in recorded])
    return recorded


def _apply(task: TaskQueue, outcome: Outcome, queue: QueueConfig | None, cancelled: bool, now: datetime) -> str | None:
    """Apply a failure or cancellation to `task`; return its new status, None if no longer held."""
    kind = outcome.kind
    if kind is OutcomeKind.CANCELLED or (kind is OutcomeKind.RETRYABLE and cancelled):
        done = task.mark_cancelled(message=outcome.error or "cancelled", now=now)
    elif kind is OutcomeKind.RETRYABLE and task.attempts < task.max_attempts:
        base, cap = (queue.retry_backoff_seconds, queue.retry_backoff_max_seconds) if queue else (10, 3600)
        run_at = now + timedelta(seconds=retry_delay(attempt=task.attempts, base=base, cap=max(cap, base)))
        done = task.schedule_retry(error=outcome.error, run_at=run_at)
    else:
        done = task.mark_failed(error=outcome.error, now=now)
    return task.status if done else None


def release_tasks(tasks: Iterable[TaskQueue]) -> int:
    """Hand claimed tasks back to the queue, their attempt not counted; return how many were held."""
    tasks = list(tasks)
    if not tasks:
        return 0

    def release() -> int:
        with transaction.atomic():
            return sum(task.release() for task in tasks)

    return with_contention_retry(release, what="handing back tasks")


@dataclass(frozen=True)
class LeaseCheck:
    held: set[int]  # still ours: running, claimed by us, same attempt
    cancel_requested: set[int]


def renew_leases(
    *, worker_id: str, tasks: Sequence[TaskQueue], lease_seconds: dict[int, int], now: datetime | None = None
) -> LeaseCheck:
    """Extend the leases of `tasks` held by `worker_id`; report which are still held and cancelled.

    `lease_seconds` maps queue id to lease length. One SELECT, then one UPDATE per lease
    length involved (usually one), all by primary key.
    """
    if not tasks:
        return LeaseCheck(set(), set())
    now = now or timezone.now()
    by_pk = {task.pk: task for task in tasks}
    rows = TaskQueue.objects.filter(pk__in=list(by_pk)).values_list(
        "pk", "status", "claimed_by", "attempts", "cancel_requested"
    )
    held, cancel = set(), set()
    for pk, status, claimed_by, attempts, cancel_requested in rows:
        if status == TaskStatus.RUNNING and claimed_by == worker_id and attempts == by_pk[pk].attempts:
            held.add(pk)
            if cancel_requested:
                cancel.add(pk)
    by_lease: dict[int, list[int]] = {}
    for pk in held:
        by_lease.setdefault(lease_seconds[by_pk[pk].queue_id], []).append(pk)
    for seconds, pks in by_lease.items():
        TaskQueue.objects.filter(pk__in=pks, status=TaskStatus.RUNNING, claimed_by=worker_id).update(
            lease_expires_at=now + timedelta(seconds=seconds)
        )
    return LeaseCheck(held, cancel)


def recover_expired_leases(*, now: datetime | None = None, limit: int = RECOVERY_BATCH) -> list[TaskQueue]:
    """Take back running tasks whose worker stopped renewing their lease; return them.

    Each is retried with back-off while attempts remain, else failed as `worker lost`
    (cancelled if a cancel was requested). Any worker may do this for any other.
    """
    return with_contention_retry(lambda: _recover(now or timezone.now(), limit), what="lease recovery")


def _recover(now: datetime, limit: int) -> list[TaskQueue]:
    with transaction.atomic():
        expired = list(TaskQueue.objects.expired_leases(now).select_for_update(skip_locked=True)[:limit])
        if not expired:
            return []
        queues = QueueConfig.objects.in_bulk({task.queue_id for task in expired})
        lost = Outcome(0, OutcomeKind.RETRYABLE, error=WORKER_LOST)
        for task in expired:
            _apply(task, lost, queues.get(task.queue_id), task.cancel_requested, now)
        counters.record_finished([task for task in expired if task.is_finished])
    return expired
