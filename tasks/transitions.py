"""The task state machine: every change of a task's status, attempt, claim or lease, and nothing else.

    enqueue ─→ pending ─claim─→ running ─succeed─→ succeeded
                  ↑  ↑             │ ├─fail──────→ failed ─┐
                  │  └─retry later─┘ ├─cancel────→ cancelled ─┤
                  │  └─release─────┘ └─recover (lease ran out): retry later or fail
                  └──────────────────── reopen (REST/admin retry) ←┘
    pending ─cancel─→ cancelled;  running ─request cancel─→ running (the handler sees it)
    finished ─delete─→ gone (retention, admin)

Each transition is one function here. Its UPDATE is guarded by the state it starts from — a
worker's by (status running, claimed_by, attempts), so a worker whose lease was taken back can
never overwrite newer state — and it keeps the statistics counters (`tasks.counters`) in step in
the same transaction. Services, the worker, the admin, the console and commands call these; none
writes `task_queue`'s status, attempts, claim or lease, or the counters, by itself.

Claiming, recording, renewing and recovering are short transactions by primary key, safe from
any number of workers at once; deadlocks and lock-wait timeouts are retried here, a lost
connection is raised to the caller.
"""

from __future__ import annotations

import copy
import enum
import functools
import operator
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    ExpressionWrapper,
    F,
    Func,
    JSONField,
    Min,
    Q,
    QuerySet,
    Value,
    When,
)
from django.utils import timezone

from core import shortcuts
from core.db.clock import DatabaseNow, database_now_plus
from core.db.errors import with_contention_retry
from core.db.topology import plan_problem
from tasks import counters, failure_groups, fair_claim, queue_cache, wakeups
from tasks.models import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    QueueConfig,
    Schedule,
    ScheduleFire,
    TaskQueue,
    TaskStatus,
    WorkerProcess,
)
from tasks.outcomes import Outcome, OutcomeKind

WORKER_LOST = "worker lost"
WORKER_LOST_EXCEPTION = "tasks.errors.WorkerLost"
# A task's own backoff may ask for any delay; beyond a year it is surely a mistake.
RETRY_DELAY_MAX_SECONDS = 365 * 24 * 3600
RECOVERY_BATCH = 100
# Rows per multi-row INSERT: large enough to amortise round trips, small enough for max_allowed_packet.
ENQUEUE_BATCH_SIZE = 500
# The order workers take tasks in: the trailing columns of task_claim_idx (InnoDB appends id).
CLAIM_ORDER = ("-priority", "run_at", "id")
# Only what running a task needs: a previous attempt's error or a big result stays unread.
CLAIM_COLUMNS = (
    "id", "owner_id", "queue_id", "kind", "task_type", "payload", "priority", "status", "attempts",
    "max_attempts", "run_at", "timeout_seconds", "cancel_requested", "created_at",
)  # fmt: skip
# The locking claim on MySQL/MariaDB. It reads task_queue alone (a join would lock the joined
# queue_config row too: MariaDB has no FOR UPDATE OF) and FORCE INDEX because on a small table
# the optimizer prefers a full scan plus filesort, and a locking read locks every row it sorts:
# the first worker would lock all pending rows and the others, skipping them, would find nothing.
CLAIM_SQL_MYSQL = (
    f"SELECT {', '.join(CLAIM_COLUMNS)} FROM task_queue FORCE INDEX (task_claim_idx) "
    "WHERE status = 'pending' AND queue_id = %s AND run_at <= %s "
    "ORDER BY priority DESC, run_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
)


# --- Enqueue ---------------------------------------------------------------------------------


def enqueue(tasks: list[TaskQueue]) -> None:
    """Insert new pending tasks: one INSERT for one task, multi-row INSERTs of ENQUEUE_BATCH_SIZE.

    Nothing else is written: a task is counted when it finishes (`tasks.counters`), so one task
    needs no transaction of its own. All the tasks of one call share one owner and one
    `created_at` (the ids are read back by them where the backend cannot return them). The
    workers of their queues are woken once they commit (`tasks.wakeups`).
    """
    if not tasks:
        return
    fast_sql = _fast_sql()
    if len(tasks) == 1:
        if fast_sql is not None:
            fast_sql.insert_one(tasks[0])
        else:
            # Not bulk_create: it wraps even one row in a transaction (two more round trips on MySQL).
            tasks[0].save(force_insert=True)
    else:
        if fast_sql is not None:
            fast_sql.insert_many(tasks, batch_size=ENQUEUE_BATCH_SIZE)
        else:
            TaskQueue.objects.bulk_create(tasks, batch_size=ENQUEUE_BATCH_SIZE)
        if tasks[0].pk is None:
            _fetch_ids(tasks)
    _wake(tasks)


@shortcuts.chosen
def _fast_sql() -> ModuleType | None:
    """The `raw_task_sql` shortcut's statements (`tasks.fast_sql`), or None: the ORM writes."""
    if shortcuts.enabled("raw_task_sql"):
        from tasks import fast_sql

        return fast_sql
    return None


def _fetch_ids(tasks: list[TaskQueue]) -> None:
    """Set the ids of just-inserted tasks where the backend cannot return them (MySQL 8).

    One enqueue call stamps all its tasks with the same created_at, and a multi-row INSERT
    assigns increasing ids in row order, so the rows read back in id order match `tasks`.
    """
    first = tasks[0]
    rows = TaskQueue.objects.filter(owner_id=first.owner_id, created_at=first.created_at).order_by("id")
    ids = list(rows.values_list("id", flat=True))
    if len(ids) != len(tasks):
        raise RuntimeError(f"expected {len(tasks)} new tasks stamped {first.created_at}, found {len(ids)}")
    for task, pk in zip(tasks, ids, strict=True):
        task.pk = pk
        task._state.adding = False


# --- Unique keys (`on_conflict=replace`) -------------------------------------------------------


def replace_pending(task: TaskQueue, *, payload: dict[str, Any], run_at: datetime, priority: int) -> bool:
    """Debounce: give a pending task that holds a unique key a new payload, run_at and priority.

    The row is locked and re-checked first (a worker's SKIP LOCKED claim passes it over
    meanwhile). Return False when it is no longer pending (claimed or finished): nothing changed.
    """
    with transaction.atomic():
        still = (
            TaskQueue.objects.select_for_update()
            .filter(pk=task.pk, status=TaskStatus.PENDING, unique_key__isnull=False)
            .values_list("pk", flat=True)
        )
        if not list(still):
            return False
        TaskQueue.objects.filter(pk=task.pk).update(payload=payload, run_at=run_at, priority=priority)
        _wake([task])
    task.payload, task.run_at, task.priority, task.status = payload, run_at, priority, TaskStatus.PENDING
    return True


def supersede_and_enqueue(running: TaskQueue, new: TaskQueue) -> bool:
    """A running task lets go of its unique key and `new` takes it, in one transaction.

    The running task carries on; only its `unique_key` is cleared. Return False when it is no
    longer running (nothing changed). A concurrent enqueue that took the key first makes the
    INSERT fail with the unique constraint's IntegrityError, raised to the caller.
    """
    with transaction.atomic():
        held = (
            TaskQueue.objects.select_for_update()
            .filter(pk=running.pk, status=TaskStatus.RUNNING, unique_key__isnull=False)
            .values_list("pk", flat=True)
        )
        if not list(held):
            return False
        TaskQueue.objects.filter(pk=running.pk).update(unique_key=None)
        enqueue([new])
    running.unique_key = None
    return True


# --- Schedules -------------------------------------------------------------------------------


def fire_schedule(
    schedule: Schedule,
    fire_time: datetime,
    *,
    task: TaskQueue | None,
    outcome: str,
    next_fire_at: datetime | None,
    check: Callable[[TaskQueue], None] | None = None,
) -> ScheduleFire:
    """Claim one fire time of `schedule` and enqueue its task (if any) in one transaction.

    1. Move the schedule's next_fire_at forward (`schedule_advance`), unless `next_fire_at` is
       None. First, so the schedule's row is write-locked before the INSERTs below read-lock it
       for their foreign keys: a read lock raised to a write lock later deadlocks with anyone
       updating the row meanwhile (another node firing it, staff pausing it).
    2. INSERT the fire row, unique on (schedule, fire_time): that INSERT is the claim. Another
       node's row makes it fail with the unique constraint's IntegrityError (or, on InnoDB, a
       deadlock), raised to the caller: nothing of this transaction stays. No affected-row count
       decides anything (the MySQL backend counts matched rows: the oban#1250 trap).
    3. `check` the task (the owner's quota: QuotaExceeded rolls everything back), INSERT it and
       point the fire row at it.
    """
    with transaction.atomic():
        if next_fire_at is not None:
            schedule_advance(schedule, next_fire_at=next_fire_at, fired_at=fire_time)
        fire = ScheduleFire.objects.create(schedule_id=schedule.pk, fire_time=fire_time, outcome=outcome)
        if task is not None:
            if check is not None:
                check(task)
            enqueue([task])
            ScheduleFire.objects.filter(pk=fire.pk).update(task=task)
            fire.task = task
    return fire


def schedule_advance(schedule: Schedule, *, next_fire_at: datetime, fired_at: datetime | None = None) -> None:
    """Move a schedule's next fire time forward to `next_fire_at` (never back; a paused one stays NULL)."""
    changes: dict[str, Any] = {"next_fire_at": next_fire_at}
    if fired_at is not None:
        changes["last_fired_at"] = fired_at
    Schedule.objects.filter(pk=schedule.pk, next_fire_at__lt=next_fire_at).update(**changes)


# --- Claim -----------------------------------------------------------------------------------


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
    # With `look_ahead`, when nothing was claimed: the earliest run_at of the pending tasks of the
    # queues searched (None: none is pending); the time to look again.
    next_run_at: datetime | None = None
    # True when runnable tasks were left for a per-key concurrency or rate limit (`tasks.fair_claim`).
    held_back: bool = False
    # Seconds until a rate-limited queue that held tasks back has a token again.
    retry_in: float | None = None
    # The clock reading the claim compared run_at with: a next_run_at after it was not due yet.
    as_of: datetime | None = None


def claim(*, worker_id: str, queues: Sequence[QueueConfig], limit: int, now: datetime | None = None) -> Claim:
    """Claim up to `limit` runnable tasks from `queues` for `worker_id`, best first."""
    return record_and_claim(worker_id=worker_id, claim_from=queues, limit=limit, now=now)[1]


def _claim(
    worker_id: str,
    queues: Sequence[QueueConfig],
    limit: int,
    now: datetime,
    *,
    look_ahead: bool = False,
    lease_from: datetime | None = None,
    clock: bool = False,
) -> Claim:
    """Claim inside the caller's transaction.

    1. Work out each queue's budget under max_concurrency (`_budgets`), locking the rows of the
       queues with a limit; their settings are read afresh from those rows.
    2. Lock candidates per queue with SKIP LOCKED: rows another worker is claiming are passed
       over, never waited for. A plain queue in one locking read in claim order; a queue with
       fairness, per-key concurrency or a rate limit by a plan (`tasks.fair_claim`): a
       non-locking read chooses, then the chosen rows are locked by primary key.
    3. Keep the best `limit` across queues (the rest unlock at commit, a moment later); spend
       the rate limits' tokens of those kept.
    4. Mark them running in one UPDATE per lease length: the queue's task timeout, or a task's
       own (usually one UPDATE for the whole batch). The lease ends that long after the
       database's clock (`core.db.clock`: one clock for all hosts), or after `lease_from` when
       the caller fixes the time.
    5. With `look_ahead` and nothing claimed, read when the next pending task of the queues
       searched is due (`_next_run_at`).
    """
    if limit <= 0 or not queues:
        return Claim()
    budgets, contended, fresh = _budgets(queues, limit)
    if clock and any(queue.rate_limit for queue in fresh.values()):
        # Read the clock again under the queue's lock: claims of a rate-limited queue then stamp
        # their starts (and spend tokens) in the order they hold it, whatever they waited for before.
        now = timezone.now()
    configs = {queue.pk: fresh.get(queue.pk, queue) for queue in queues}
    result = Claim(contended=contended, as_of=now)
    candidates: list[TaskQueue] = []
    plans: list[fair_claim.Plan] = []
    sources = 0
    for queue_id, budget in budgets.items():
        if budget <= 0:
            continue
        queue = configs[queue_id]
        held_back = False
        if fair_claim.is_plain(queue):
            found = _lock_claimable(queue_id, now, min(budget, limit))
        else:
            plan = fair_claim.plan(queue, now, min(budget, limit), lock_columns=CLAIM_COLUMNS)
            found = plan.locked_tasks() if plan.locked else _lock_chosen(plan.ids, now)
            plans.append(plan)
            held_back = plan.held_back
            result.held_back |= held_back
            if plan.retry_in is not None:
                result.retry_in = min(plan.retry_in, result.retry_in or plan.retry_in)
        candidates.extend(found)
        sources += bool(found)
        if not found and not held_back:
            result.empty_queues.add(queue_id)
    if sources > 1:
        # A fair queue's batch keeps its round-robin order when it is the only one.
        candidates.sort(key=lambda task: (-task.priority, task.run_at, task.pk))
    chosen = candidates[:limit]
    taken = {task.pk for task in chosen}
    for plan in plans:
        fair_claim.settle(plan, taken, now)
    leases = {queue.pk: queue.task_timeout_seconds for queue in queues}
    by_lease: dict[int, list[TaskQueue]] = {}
    for task in chosen:
        by_lease.setdefault(task.timeout_seconds or leases[task.queue_id], []).append(task)
    for seconds, tasks in by_lease.items():
        _mark_running(tasks, worker_id=worker_id, now=now, lease_seconds=seconds, lease_from=lease_from)
    result.tasks = chosen
    if look_ahead and not chosen and result.empty_queues:
        result.next_run_at = _next_run_at(result.empty_queues)
    return result


def _next_run_at(queue_ids: Iterable[int]) -> datetime | None:
    """Return the earliest run_at among the pending tasks of these queues (a plain read, no lock).

    Served by task_claim_idx (status, queue_id, priority DESC, run_at) alone: equality on the
    prefix, MIN over the index's own run_at entries; no table row is read.
    """
    pending = TaskQueue.objects.filter(status=TaskStatus.PENDING, queue_id__in=sorted(queue_ids))
    return pending.aggregate(earliest=Min("run_at"))["earliest"]


@dataclass(frozen=True)
class IdleLook:
    """What an idle worker reads in its poll: when the next piece of work is due (None: none is)."""

    now: datetime  # the database's clock (leases end by it)
    run_at: datetime | None  # the earliest run_at of a pending task of the worker's queues
    fire_at: datetime | None  # the earliest next_fire_at of a schedule (paused ones are NULL)
    lease_end: datetime | None  # the earliest lease of a running task, of any worker
    oldest_heartbeat: datetime | None  # the oldest worker row's heartbeat


def idle_look(queue_names: Sequence[str] = ()) -> IdleLook:
    """Read, in one SELECT, when the next task, schedule fire time, lost lease or stale worker is due.

    An idle worker's poll while wake-ups are live: plain reads, nothing locked, each a MIN on an
    index (`next_due`; task_schedule_due_idx; task_lease_idx; the last_heartbeat_at index), so
    the worker ticks schedules, recovers leases and prunes rows only when one is due.
    """
    pending = next_due(queue_names).values("m")
    fires = Schedule.objects.order_by().annotate(m=_min("next_fire_at")).values("m")
    leases = (
        TaskQueue.objects.filter(status=TaskStatus.RUNNING).order_by().annotate(m=_min("lease_expires_at")).values("m")
    )
    beats = WorkerProcess.objects.order_by().annotate(m=_min("last_heartbeat_at")).values("m")
    parts = [queryset.query.sql_with_params() for queryset in (pending, fires, leases, beats)]
    clock = "UTC_TIMESTAMP(6)" if connection.vendor == "mysql" else "NULL"
    sql = "SELECT " + ", ".join([clock, *(f"({part})" for part, _ in parts)])
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for _, params in parts for value in params])
        row = cursor.fetchone()
    now, run_at, fire_at, lease_end, beat = (_datetime(value) for value in row)
    return IdleLook(now or timezone.now(), run_at, fire_at, lease_end, beat)


def next_due(queue_names: Sequence[str] = ()) -> QuerySet[TaskQueue]:
    """Return the query of the earliest run_at (`m`) among the pending tasks of the unpaused queues named (all when empty).

    queue_config joined to task_claim_idx (status, queue_id, ...): MIN over the index's own
    run_at entries, no task row read and nothing locked.
    """
    pending = TaskQueue.objects.filter(status=TaskStatus.PENDING, queue__is_paused=False)
    if queue_names:
        pending = pending.filter(queue__name__in=list(queue_names))
    return pending.order_by().annotate(m=_min("run_at"))


def _min(column: str) -> Func:
    # MIN as a plain function, not an aggregate: no GROUP BY, one row for the whole table.
    return Func(F(column), function="MIN", output_field=DateTimeField())


def _datetime(value: object) -> datetime | None:
    """Return a datetime column read by a raw cursor as Django reads it (aware)."""
    return None if value is None else connection.ops.convert_datetimefield_value(value, None, connection)


def _limited(queue: QueueConfig) -> bool:
    """Return True when claiming from the queue needs its row lock (counts or tokens shared by the fleet)."""
    return bool(queue.max_concurrency or queue.per_key_concurrency or queue.rate_limit)


def _budgets(queues: Sequence[QueueConfig], limit: int) -> tuple[dict[int, int], bool, dict[int, QueueConfig]]:
    """Return how many tasks may be claimed per queue, honouring max_concurrency for all workers.

    A limited queue's row is locked (SKIP LOCKED, in id order) for the rest of the short claim
    transaction, so two workers never both count the same free slots (or per-key slots, or
    tokens); a queue another worker is claiming from right now is skipped this round rather
    than waited for. Also return the locked rows: those queues' settings as they are now.
    """
    budgets = {queue.pk: limit for queue in queues if not _limited(queue)}
    limited = [queue.pk for queue in queues if _limited(queue)]
    if not limited:
        return budgets, False, {}
    locked = {
        queue.pk: queue
        for queue in QueueConfig.objects.filter(pk__in=limited, is_paused=False)
        .order_by("id")
        .select_for_update(skip_locked=True)
    }
    capped = [queue_id for queue_id, queue in locked.items() if queue.max_concurrency]
    # Served by the task_claim_idx prefix (status, queue_id).
    running = (
        dict(
            TaskQueue.objects.filter(status=TaskStatus.RUNNING, queue_id__in=capped)
            .values_list("queue_id")
            .annotate(n=Count("id"))
            .order_by()
        )
        if capped
        else {}
    )
    for queue_id, queue in locked.items():
        if queue.max_concurrency:
            budgets[queue_id] = max(0, min(limit, queue.max_concurrency - running.get(queue_id, 0)))
        else:
            budgets[queue_id] = limit
    return budgets, len(locked) < len(limited), locked


def _lock_claimable(queue_id: int, now: datetime, limit: int) -> list[TaskQueue]:
    """Lock and return up to `limit` of one queue's runnable tasks in claim order.

    Served by task_claim_idx (status, queue_id, priority DESC, run_at): equality on the first two
    columns and ORDER BY on the rest, so no filesort and, FOR UPDATE, no rows locked beyond the
    ones returned. One queue per query on purpose: `queue_id IN (...)` would sort the union of the
    queues and lock every row it read.
    """
    if connection.vendor == "mysql":
        params = [queue_id, connection.ops.adapt_datetimefield_value(now), limit]
        return list(TaskQueue.objects.raw(CLAIM_SQL_MYSQL, params))
    # SQLite: the transaction (BEGIN IMMEDIATE) already excludes every other writer.
    rows = TaskQueue.objects.runnable(now).filter(queue_id=queue_id).order_by(*CLAIM_ORDER)
    return list(rows.only(*CLAIM_COLUMNS)[:limit])


def claim_plan_problem(*, limit: int = 20) -> str | None:
    """EXPLAIN the claim query and return why it would lock more rows than it claims, or None.

    MySQL/MariaDB only (SQLite claims under BEGIN IMMEDIATE, locking nothing row by row). The
    plan is taken for a real queue id, as the worker's first claim would run it.
    """
    if connection.vendor != "mysql":
        return None
    queue_id = QueueConfig.objects.order_by("id").values_list("id", flat=True).first() or 0
    params = [queue_id, connection.ops.adapt_datetimefield_value(timezone.now()), limit]
    return plan_problem(connection, CLAIM_SQL_MYSQL, params, table=TaskQueue._meta.db_table)


def _lock_chosen(pks: Sequence[int], now: datetime) -> list[TaskQueue]:
    """Lock the tasks a plan chose, by primary key with SKIP LOCKED, in the plan's order.

    Each is re-checked pending and due: another worker may have claimed it (and even finished
    it) since the plan's non-locking read.
    """
    if not pks:
        return []
    rows = (
        TaskQueue.objects.filter(pk__in=list(pks), status=TaskStatus.PENDING, run_at__lte=now)
        .order_by()
        .select_for_update(skip_locked=True)
        .only(*CLAIM_COLUMNS)
    )
    by_pk = {task.pk: task for task in rows}
    return [by_pk[pk] for pk in pks if pk in by_pk]


def _mark_running(
    tasks: list[TaskQueue], *, worker_id: str, now: datetime, lease_seconds: int, lease_from: datetime | None
) -> None:
    """pending → running for rows this transaction has locked: one more attempt, under a lease.

    The rows' lease ends by the database's clock unless `lease_from` fixes it; the objects carry
    `now` + the lease, the same end as seen from this host.
    """
    pks = [task.pk for task in tasks]
    fast_sql = _fast_sql()
    if fast_sql is not None:
        fast_sql.mark_running(pks, worker_id=worker_id, now=now, lease_seconds=lease_seconds, lease_from=lease_from)
    else:
        TaskQueue.objects.filter(pk__in=pks).update(
            status=TaskStatus.RUNNING,
            attempts=F("attempts") + 1,
            claimed_by=worker_id,
            lease_expires_at=_lease_end(lease_seconds, lease_from),
            started_at=now,
        )
    lease_expires_at = (lease_from or now) + timedelta(seconds=lease_seconds)
    for task in tasks:
        task.status = TaskStatus.RUNNING
        task.attempts += 1
        task.claimed_by = worker_id
        task.lease_expires_at = lease_expires_at
        task.started_at = now


def _lease_end(seconds: int, lease_from: datetime | None) -> datetime | ExpressionWrapper:
    """Return when a lease of `seconds` taken now ends: by the database's clock, or from `lease_from`."""
    if lease_from is not None:
        return lease_from + timedelta(seconds=seconds)
    return database_now_plus(seconds)


# --- A worker's outcomes ---------------------------------------------------------------------


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
    look_ahead: bool = False,
) -> tuple[list[Recorded], Claim]:
    """Record a batch of outcomes, then claim the next batch: one short transaction, one commit.

    Recording first frees the finished tasks' places under each queue's max_concurrency (the
    workers of such a queue are woken, and those of the queues of retried tasks). The counters
    and failure groups, rows all workers share, are written last, so the locks on them are held
    from that write to the commit only, not through the claim. With
    `look_ahead`, a claim that finds nothing also reads when the next scheduled task of those
    queues is due (`Claim.next_run_at`).
    """
    if not results and (limit <= 0 or not claim_from):
        return [], Claim()
    cancels = set(cancel_requested)
    backoff = {**(queues or {}), **{queue.pk: queue for queue in claim_from}}

    def work() -> tuple[list[Recorded], Claim]:
        moment = now or timezone.now()
        with transaction.atomic():
            recorded = _record(results, worker_id, backoff, cancels, moment) if results else []
            _wake_after_outcomes(recorded, backoff)
            claim = _claim(
                worker_id, claim_from, limit, moment, look_ahead=look_ahead, lease_from=now, clock=now is None
            )
            # Last, just before the commit: every worker's transaction writes these shared rows,
            # and each holds their locks from its first write to its commit.
            _count_recorded(recorded, moment)
            return recorded, claim

    return with_contention_retry(work, what="recording and claiming")


def _record(
    results: Sequence[tuple[TaskQueue, Outcome]],
    worker_id: str,
    queues: dict[int, QueueConfig],
    cancels: set[int],
    now: datetime,
) -> list[Recorded]:
    """Record inside the caller's transaction; the caller counts what it returns (`_count_recorded`)."""
    if all(outcome.kind is OutcomeKind.SUCCEEDED for _, outcome in results):
        return _record_successes(results, worker_id, now)
    recorded: list[Recorded] = []
    successes: dict[int, object] = {}
    held = _lock_held(worker_id, {task.pk: task.attempts for task, _ in results})
    for task, outcome in results:
        if task.pk not in held:
            continue
        if outcome.kind is OutcomeKind.SUCCEEDED:
            successes[task.pk] = outcome.result
            _set_succeeded(task, outcome.result, now)  # saved by the one UPDATE below
        else:
            # A copy: its guarded UPDATE changes the claim fields a retry of this transaction would need.
            task = copy.copy(task)
            task.attempt_errors = held[task.pk]
            if not _settle_unsuccessful(task, outcome, queues.get(task.queue_id), task.pk in cancels, now):
                continue
        recorded.append(Recorded(task, outcome, task.status))
    attempts = {task.pk: task.attempts for task, _ in results if task.pk in successes}
    _succeed(worker_id, successes, attempts, now)
    return recorded


def _count_recorded(recorded: Sequence[Recorded], now: datetime) -> None:
    """Count the finished tasks of a recorded batch, and group its failures, in the caller's transaction."""
    if not recorded:
        return
    counters.record_finished([r.task for r in recorded if r.status != TaskStatus.PENDING])
    failed = [r.task for r in recorded if r.status == TaskStatus.FAILED]
    if failed:
        failure_groups.record_failed(failed, {r.task.pk: r.outcome.exception for r in recorded}, now)


def _record_successes(results: Sequence[tuple[TaskQueue, Outcome]], worker_id: str, now: datetime) -> list[Recorded]:
    """Record a batch of successes (the usual batch) with one guarded UPDATE and no locking read first.

    The UPDATE changes only the tasks this claim still holds; when it changed fewer than asked
    (a lease taken back meanwhile: rare), one SELECT tells which it did finish.
    """
    outcomes = {task.pk: outcome.result for task, outcome in results}
    attempts = {task.pk: task.attempts for task, _ in results}
    changed = _succeed(worker_id, outcomes, attempts, now)
    if changed == len(outcomes):
        done = set(outcomes)
    else:
        rows = TaskQueue.objects.filter(pk__in=list(outcomes), claimed_by=worker_id, finished_at=now)
        done = set(rows.values_list("pk", flat=True))
    recorded = []
    for task, outcome in results:
        if task.pk in done:
            _set_succeeded(task, outcome.result, now)
            recorded.append(Recorded(task, outcome, task.status))
    return recorded


def _lock_held(worker_id: str, attempts: dict[int, int]) -> dict[int, list[dict[str, Any]]]:
    """Lock the given tasks (pk -> attempt) still held by that claim; return their earlier attempts' errors by pk.

    The errors are read by the same locking SELECT: a failure appends to them in its UPDATE.
    """
    rows = _held_by(worker_id).filter(pk__in=list(attempts)).select_for_update()
    return {
        pk: errors or []
        for pk, attempt, errors in rows.values_list("pk", "attempts", "attempt_errors")
        if attempts[pk] == attempt
    }


def _succeed(worker_id: str, results: dict[int, Any], attempts: dict[int, int], now: datetime) -> int:
    """running → succeeded for the tasks `worker_id` still holds, in one UPDATE; return how many changed.

    `results` maps pk to result, `attempts` pk to the attempt that ran: a task taken back and
    claimed again meanwhile (another attempt, even by this worker) is left alone.
    """
    if not results:
        return 0
    fast_sql = _fast_sql()
    if fast_sql is not None:
        return fast_sql.succeed(worker_id, results, attempts, now)
    at_its_attempt = functools.reduce(operator.or_, (Q(pk=pk, attempts=attempts[pk]) for pk in results))
    # Value(None) is SQL NULL, what saving `result=None` stores; Value(None, JSONField()) would be JSON null.
    result = Case(
        *(
            When(pk=pk, then=Value(None) if value is None else Value(value, output_field=JSONField()))
            for pk, value in results.items()
        ),
        output_field=JSONField(),
    )
    return (
        _held_by(worker_id)
        .filter(at_its_attempt, pk__in=list(results))
        .update(
            status=TaskStatus.SUCCEEDED,
            progress=100,
            error="",
            finished_at=now,
            lease_expires_at=None,
            result=result,
        )
    )


def _set_succeeded(task: TaskQueue, result: Any, now: datetime) -> None:
    task.status = TaskStatus.SUCCEEDED
    task.result = result
    task.progress = 100
    task.error = ""
    task.finished_at = now
    task.lease_expires_at = None


def _settle_unsuccessful(
    task: TaskQueue, outcome: Outcome, queue: QueueConfig | None, cancelled: bool, now: datetime
) -> bool:
    """Apply a failure or cancellation to a held task; return False if it is no longer held.

    A retryable failure of a task whose cancel was requested ends it cancelled; otherwise it is
    retried later while attempts remain (after the task's own backoff when its outcome carries
    one, else the queue's), else failed. A permanent failure fails it at once. A failure
    appends an entry to `task.attempt_errors` (which must hold the stored list) in the same UPDATE.
    """
    kind = outcome.kind
    if kind is OutcomeKind.CANCELLED or (kind is OutcomeKind.RETRYABLE and cancelled):
        return _guarded(
            task,
            status=TaskStatus.CANCELLED,
            progress_message=(outcome.error or "cancelled")[:255],
            finished_at=now,
            lease_expires_at=None,
        )
    errors = [*(task.attempt_errors or []), _attempt_error(task, outcome)]
    if kind is OutcomeKind.RETRYABLE and task.attempts < task.max_attempts:
        delay = outcome.retry_delay
        if delay is None:
            base, cap = (queue.retry_backoff_seconds, queue.retry_backoff_max_seconds) if queue else (10, 3600)
            delay = retry_delay(attempt=task.attempts, base=base, cap=max(cap, base))
        return _guarded(
            task,
            status=TaskStatus.PENDING,
            error=outcome.error,
            attempt_errors=errors,
            run_at=now + timedelta(seconds=min(max(delay, 0.0), RETRY_DELAY_MAX_SECONDS)),
            claimed_by="",
            lease_expires_at=None,
        )
    return _guarded(
        task,
        status=TaskStatus.FAILED,
        error=outcome.error,
        attempt_errors=errors,
        finished_at=now,
        lease_expires_at=None,
        failure_group_id=failure_groups.group_key(task.task_type, outcome.exception, outcome.error),
    )


def _attempt_error(task: TaskQueue, outcome: Outcome) -> dict[str, Any]:
    """Return the history entry of the attempt `outcome` failed (its worker is the claim's)."""
    return {
        "attempt": task.attempts,
        "worker": task.claimed_by,
        "exception": outcome.exception,
        "error": outcome.error,
        "started_at": task.started_at.isoformat() if task.started_at else None,
    }


def retry_delay(*, attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Return seconds to wait before retrying after failed attempt number `attempt` (1-based).

    Exponential (base, 2*base, 4*base, ... up to cap) with "equal jitter": between half and
    all of that step, so retries of many tasks that failed together spread out.
    """
    step = min(cap, base * 2 ** max(attempt - 1, 0))
    return step / 2 + (rng or random).uniform(0, step / 2)


def _held_by(worker_id: str) -> QuerySet[TaskQueue]:
    return TaskQueue.objects.filter(status=TaskStatus.RUNNING, claimed_by=worker_id)


def _guarded(task: TaskQueue, **changes: Any) -> bool:
    """Write `changes` only while `task` is still held by the same claim and attempt; update the instance."""
    if not _held_by(task.claimed_by).filter(pk=task.pk, attempts=task.attempts).update(**changes):
        return False
    for name, value in changes.items():
        setattr(task, name, value)
    return True


def release(tasks: Iterable[TaskQueue]) -> int:
    """running → pending for claimed tasks handed back unstarted (or cut short by shutdown).

    The attempt is not counted. Return how many were still held.
    """
    tasks = list(tasks)
    if not tasks:
        return 0

    def work() -> int:
        with transaction.atomic():
            released = sum(
                _guarded(
                    task,
                    status=TaskStatus.PENDING,
                    attempts=max(task.attempts - 1, 0),
                    claimed_by="",
                    lease_expires_at=None,
                    started_at=None,
                )
                for task in tasks
            )
            if released:
                _wake(tasks)
            return released

    return with_contention_retry(work, what="handing back tasks")


@dataclass(frozen=True)
class LeaseCheck:
    held: set[int]  # still ours: running, claimed by us, same attempt
    cancel_requested: set[int]


def renew_leases(
    *, worker_id: str, tasks: Sequence[TaskQueue], lease_seconds: dict[int, int], now: datetime | None = None
) -> LeaseCheck:
    """Extend the leases of `tasks` held by `worker_id`; report which are still held and cancelled.

    `lease_seconds` maps queue id to lease length (a task with its own timeout keeps that
    instead). One SELECT, then one UPDATE per lease length involved (usually one), all by
    primary key. Leases end by the database's clock (`core.db.clock`), or from `now` when given.
    """
    if not tasks:
        return LeaseCheck(set(), set())
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
        task = by_pk[pk]
        by_lease.setdefault(task.timeout_seconds or lease_seconds[task.queue_id], []).append(pk)
    for seconds, pks in by_lease.items():
        _held_by(worker_id).filter(pk__in=pks).update(lease_expires_at=_lease_end(seconds, now))
    return LeaseCheck(held, cancel)


def write_progress(*, worker_id: str, reports: Mapping[int, tuple[int, str]]) -> int:
    """Store handlers' progress reports (pk -> (percent, message)) on tasks `worker_id` still holds.

    Return how many tasks were still held (and updated).
    """
    return sum(
        _held_by(worker_id).filter(pk=pk).update(progress=percent, progress_message=message)
        for pk, (percent, message) in reports.items()
    )


def recover_expired_leases(*, now: datetime | None = None, limit: int = RECOVERY_BATCH) -> list[TaskQueue]:
    """Take back running tasks whose worker stopped renewing their lease; return them.

    Each is retried with back-off while attempts remain, else failed as `worker lost`
    (cancelled if a cancel was requested). Any worker may do this for any other. A lease has
    ended when the database's clock (`core.db.clock`) says so, whatever this host's clock says;
    `now` fixes the time instead.
    """
    return with_contention_retry(lambda: _recover(now, limit), what="lease recovery")


def _recover(now: datetime | None, limit: int) -> list[TaskQueue]:
    ended_before = DatabaseNow() if now is None else now
    now = now or timezone.now()
    with transaction.atomic():
        # Served by task_lease_idx (status, lease_expires_at).
        expired = list(
            TaskQueue.objects.filter(status=TaskStatus.RUNNING, lease_expires_at__lt=ended_before)
            .order_by("lease_expires_at")
            .select_for_update(skip_locked=True)[:limit]
        )
        if not expired:
            return []
        queues = QueueConfig.objects.in_bulk({task.queue_id for task in expired})
        lost = Outcome(0, OutcomeKind.RETRYABLE, error=WORKER_LOST, exception=WORKER_LOST_EXCEPTION)
        for task in expired:
            _settle_unsuccessful(task, lost, queues.get(task.queue_id), task.cancel_requested, now)
        counters.record_finished([task for task in expired if task.is_finished])
        failed = [task for task in expired if task.status == TaskStatus.FAILED]
        failure_groups.record_failed(failed, dict.fromkeys((task.pk for task in failed), WORKER_LOST_EXCEPTION), now)
        _wake([task for task in expired if task.status == TaskStatus.PENDING], queues)
    return expired


# --- Wake-ups --------------------------------------------------------------------------------


def _wake(tasks: Iterable[TaskQueue], queues: Mapping[int, QueueConfig] | None = None) -> None:
    """Wake the workers of these tasks' queues once the transaction commits (`tasks.wakeups`).

    The queue's name comes from what is at hand (`queues`, the task's loaded queue, the
    enqueue cache): never a query. Unknown, the wake-up goes to every worker.
    """
    if wakeups.enabled():
        wakeups.notify({_queue_name(task, queues or {}) for task in tasks})


def _queue_name(task: TaskQueue, queues: Mapping[int, QueueConfig]) -> str | None:
    queue = queues.get(task.queue_id)
    if queue is None and TaskQueue.queue.is_cached(task):
        queue = task.queue
    return queue.name if queue is not None else queue_cache.name_of(task.queue_id)


def _wake_after_outcomes(recorded: Sequence[Recorded], queues: Mapping[int, QueueConfig]) -> None:
    """Wake for the tasks to retry, and for queues under max_concurrency whose places just freed."""
    if not recorded or not wakeups.enabled():
        return
    waking = []
    for entry in recorded:
        queue = queues.get(entry.task.queue_id)
        if entry.status == TaskStatus.PENDING or (queue is not None and queue.max_concurrency):
            waking.append(entry.task)
    if waking:
        _wake(waking, queues)


# --- Owners and staff ------------------------------------------------------------------------


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"


def cancel(task: TaskQueue) -> CancelOutcome | None:
    """pending → cancelled at once; running → cancel requested (its handler sees it).

    Return None when the task is finished (nothing changed). Each step is one conditional
    UPDATE, so a worker claiming the task at the same moment either sees it cancelled or the
    cancel lands as a request on the running task. `task` is refreshed from the database.
    """
    now = timezone.now()
    with transaction.atomic():
        pending = TaskQueue.objects.filter(pk=task.pk, status=TaskStatus.PENDING)
        if pending.update(status=TaskStatus.CANCELLED, finished_at=now, cancel_requested=True):
            task.refresh_from_db()
            counters.record_finished([task])
            return CancelOutcome.CANCELLED
        requested = TaskQueue.objects.filter(pk=task.pk, status=TaskStatus.RUNNING).update(cancel_requested=True)
    task.refresh_from_db()
    return CancelOutcome.CANCEL_REQUESTED if requested else None


def reopen(task: TaskQueue) -> bool:
    """failed/cancelled → pending with attempts reset (the REST and admin "retry").

    Return False when the task is not failed or cancelled (nothing changed). `task` is
    refreshed from the database.
    """
    with transaction.atomic():
        old = (
            TaskQueue.objects.select_for_update()
            .filter(pk=task.pk, status__in=(TaskStatus.FAILED, TaskStatus.CANCELLED))
            .values_list("status", "created_at", "failure_group_id")
            .first()
        )
        if old is not None:
            TaskQueue.objects.filter(pk=task.pk).update(
                status=TaskStatus.PENDING,
                attempts=0,
                run_at=timezone.now(),
                claimed_by="",
                lease_expires_at=None,
                progress=0,
                progress_message="",
                result=None,
                error="",
                attempt_errors=[],
                cancel_requested=False,
                started_at=None,
                finished_at=None,
                failure_group=None,
            )
            counters.record_reopened([(task.owner_id, task.queue_id, *old[:2])])
            failure_groups.record_left([old[2] if old[0] == TaskStatus.FAILED else None])
            _wake([task])
    task.refresh_from_db()
    return old is not None


def delete(queryset: QuerySet[TaskQueue]) -> int:
    """Delete the tasks `queryset` selects (re-checked under lock) and uncount them; return how many.

    A failed task leaves its failure group's count too.
    """
    with transaction.atomic():
        rows = list(
            queryset.select_for_update().values_list("pk", "owner_id", "queue_id", "status", "failure_group_id")
        )
        TaskQueue.objects.filter(pk__in=[pk for pk, *_ in rows]).delete()
        counters.record_deleted([(owner_id, queue_id, status) for _, owner_id, queue_id, status, _ in rows])
        failure_groups.record_left([group for *_, status, group in rows if status == TaskStatus.FAILED])
    return len(rows)


def purge(pks: Sequence[int], *, statuses: Sequence[str], before: datetime) -> int:
    """Delete those of `pks` that are still finished (in `statuses`) since before `before`; return how many.

    The condition is checked again under lock: a task retried between the caller's scan and
    this delete is no longer finished, and stays.
    """
    statuses = [status for status in statuses if status in FINISHED_STATUSES]
    return delete(TaskQueue.objects.filter(pk__in=list(pks), status__in=statuses, finished_at__lt=before))


# --- Bulk actions (`tasks.bulk`): one batch each, in one transaction ------------------------------
#
# Each takes a queryset that names one batch (primary keys plus the action's filter), locks the
# rows it selects in primary-key order and re-checks their status under that lock, so a worker's
# claim, a finish or a single retry that landed meanwhile is respected. Tasks that hold a unique
# key are changed one by one in a savepoint: one whose key another active task holds now is left
# as it is (never the whole batch refused). They run inside the caller's transaction when there is
# one (the bulk runner's batch), so a deadlock is retried by the caller, for the whole batch.

REOPEN_FIELDS = {
    "status": TaskStatus.PENDING,
    "attempts": 0,
    "claimed_by": "",
    "lease_expires_at": None,
    "progress": 0,
    "progress_message": "",
    "result": None,
    "error": "",
    "attempt_errors": [],
    "cancel_requested": False,
    "started_at": None,
    "finished_at": None,
    "failure_group": None,
}


def _update_keyed(pks: Sequence[int], keyed: set[int], **changes: Any) -> set[int]:
    """UPDATE `pks` with `changes`: the ones in `keyed` (holding a unique key) each in a savepoint.

    Return the pks changed; a keyed task whose key another active task holds is left unchanged.
    """
    from django.db import IntegrityError

    plain = [pk for pk in pks if pk not in keyed]
    done = set(plain)
    if plain:
        TaskQueue.objects.filter(pk__in=plain).update(**changes)
    for pk in sorted(keyed):
        try:
            with transaction.atomic():
                TaskQueue.objects.filter(pk=pk).update(**changes)
        except IntegrityError:
            continue
        done.add(pk)
    return done


def reopen_many(queryset: QuerySet[TaskQueue]) -> int:
    """failed/cancelled → pending with attempts reset, for the tasks `queryset` selects; return how many."""

    with transaction.atomic():
        rows = list(
            queryset.filter(status__in=(TaskStatus.FAILED, TaskStatus.CANCELLED))
            .order_by("pk")
            .select_for_update()
            .values_list("pk", "owner_id", "queue_id", "status", "created_at", "failure_group_id", "unique_key")
        )
        if not rows:
            return 0
        keyed = {pk for pk, *_, unique_key in rows if unique_key is not None}
        done = _update_keyed([row[0] for row in rows], keyed, run_at=timezone.now(), **REOPEN_FIELDS)
        rows = [row for row in rows if row[0] in done]
        counters.record_reopened([(owner, queue, status, created) for _, owner, queue, status, created, *_ in rows])
        failure_groups.record_left([row[5] for row in rows if row[3] == TaskStatus.FAILED])
        _wake([TaskQueue(pk=row[0], queue_id=row[2]) for row in rows])
        return len(rows)


def cancel_many(queryset: QuerySet[TaskQueue]) -> int:
    """pending → cancelled, running → cancel requested, for the tasks `queryset` selects; return how many changed."""

    now = timezone.now()
    with transaction.atomic():
        rows = list(
            queryset.filter(status__in=ACTIVE_STATUSES)
            .order_by("pk")
            .select_for_update()
            .only("pk", "owner_id", "queue_id", "status", "created_at", "started_at", "cancel_requested")
        )
        pending = [task for task in rows if task.status == TaskStatus.PENDING]
        running = [task.pk for task in rows if task.status == TaskStatus.RUNNING and not task.cancel_requested]
        if pending:
            TaskQueue.objects.filter(pk__in=[task.pk for task in pending]).update(
                status=TaskStatus.CANCELLED, finished_at=now, cancel_requested=True
            )
            for task in pending:
                task.status, task.finished_at, task.cancel_requested = TaskStatus.CANCELLED, now, True
            counters.record_finished(pending)
        if running:
            TaskQueue.objects.filter(pk__in=running).update(cancel_requested=True)
        return len(pending) + len(running)


def delete_many(queryset: QuerySet[TaskQueue]) -> int:
    """Delete the finished and pending tasks `queryset` selects (never a running one); return how many."""
    return delete(queryset.exclude(status=TaskStatus.RUNNING).order_by("pk"))


def set_priority_many(queryset: QuerySet[TaskQueue], priority: int) -> int:
    """Give the pending tasks `queryset` selects a new priority; return how many changed."""

    with transaction.atomic():
        rows = list(
            queryset.filter(status=TaskStatus.PENDING)
            .exclude(priority=priority)
            .order_by("pk")
            .select_for_update()
            .values_list("pk", "queue_id")
        )
        if rows:
            TaskQueue.objects.filter(pk__in=[pk for pk, _ in rows]).update(priority=priority)
            _wake([TaskQueue(pk=pk, queue_id=queue_id) for pk, queue_id in rows])
        return len(rows)


def move_many(queryset: QuerySet[TaskQueue], queue: QueueConfig) -> int:
    """Move the pending tasks `queryset` selects to `queue`; return how many moved.

    A task holding a unique key that an active task of the same owner holds in `queue` stays.
    """

    with transaction.atomic():
        rows = list(
            queryset.filter(status=TaskStatus.PENDING)
            .exclude(queue_id=queue.pk)
            .order_by("pk")
            .select_for_update()
            .values_list("pk", "unique_key")
        )
        keyed = {pk for pk, unique_key in rows if unique_key is not None}
        done = _update_keyed([pk for pk, _ in rows], keyed, queue_id=queue.pk)
        if done:
            _wake([TaskQueue(pk=pk, queue_id=queue.pk) for pk in done], {queue.pk: queue})
        return len(done)
