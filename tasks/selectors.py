"""Reads for the statistics and queue-status endpoints, computed in the database.

Neither reader's cost grows with `task_queue`: finished tasks are read from the counter tables
that `tasks.counters` keeps in step, and only pending/running rows (few, by design) are
counted live, through indexes. All queries are plain consistent reads: no locks on any row.
Inside `core.db.replica.replica_reads` they may be answered by the replica; statistics then
say how fresh they are (`Freshness`).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Max, Min, Q, QuerySet, Sum, Value
from django.utils import timezone

from core.db.replica import PRIMARY, REPLICA, fell_back, freshness, read_alias, replica_state
from tasks.counters import hour_of
from tasks.fair_claim import fold_key
from tasks.models import (
    ACTIVE_STATUSES,
    OwnerQueueSettings,
    QueueConfig,
    QueueRateBucket,
    TaskHourlyStats,
    TaskQueue,
    TaskStatus,
    TaskStatusCount,
    WorkerProcess,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

STATUSES = tuple(TaskStatus.values)


@dataclass(frozen=True)
class Throughput:
    since: datetime
    created: int
    succeeded: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class Freshness:
    """Where a read was answered and how old its data may be."""

    source: str  # "primary" or "replica"
    as_of: datetime | None  # the data is at least this recent; None: unknown
    lag_seconds: float | None  # behind the primary by at most this; None: unknown
    stale: bool  # lag unknown, or over DATABASE_REPLICA_MAX_LAG_SECONDS
    fallback: bool = False  # the replica should have answered but could not be reached


@dataclass(frozen=True)
class TaskStatistics:
    scope: str
    by_status: dict[str, int]
    by_queue: dict[str, dict[str, int]]
    last_hour: Throughput
    last_24_hours: Throughput
    window_hours: int
    window_since: datetime
    failure_rate: float | None
    mean_wait_seconds: float | None
    mean_run_seconds: float | None
    generated_at: datetime
    freshness: Freshness


@dataclass(frozen=True)
class QueueStatus:
    name: str
    is_paused: bool
    max_concurrency: int
    max_active_per_user: int | None
    pending: int
    scheduled: int
    running: int
    oldest_pending_age_seconds: float | None
    live_workers: int
    fairness: str = "none"
    per_key_concurrency: int = 0
    rate_limit: str = ""
    rate_limit_per_key: bool = False
    active_owners: int = 0  # owners with runnable tasks: the ones a fair claim takes turns between
    keys_at_limit: int = 0  # concurrency keys with per_key_concurrency tasks running
    throttled_by_rate: int = 0  # claims that left runnable tasks behind for want of rate-limit tokens


def window_start(now: datetime, hours: int) -> datetime:
    """Return the start of an `hours`-long window of whole UTC hours: the current one and those before."""
    return hour_of(now) - timedelta(hours=max(hours, 1) - 1)


def task_statistics(*, user: AbstractBaseUser | None, now: datetime | None = None) -> TaskStatistics:
    """Return task statistics for `user`'s tasks, or for everyone's when `user` is None.

    Four queries: queue names; finished counts from `task_status_count`; pending/running counted
    live with their creations in the windows (index on owner+status, or for everyone
    `task_live_idx`, which covers them in GROUP BY order); the hourly windows summed from
    `task_hourly_stats`. Windows are whole UTC hours, the current one included.
    """
    now = now or timezone.now()
    names = dict(QueueConfig.objects.values_list("id", "name"))
    by_queue = {name: dict.fromkeys(STATUSES, 0) for name in names.values()}

    window_hours = settings.TASKHUB_STATS_WINDOW_HOURS
    hour_since, day_since, window_since = (window_start(now, h) for h in (1, 24, window_hours))

    finished = TaskStatusCount.objects.all() if user is None else TaskStatusCount.objects.filter(owner=user)
    active = TaskQueue.objects.filter(status__in=ACTIVE_STATUSES)
    active = active if user is None else active.filter(owner=user)
    # Grouped by (status, queue): for everyone, the order of task_live_idx (status, queue,
    # created_at), so index entries only and no temporary table. Live tasks' creations are
    # counted here: the hourly counters count a task when it finishes.
    rows = list(finished.values_list("status", "queue_id").annotate(n=Sum("count"), h=Value(0), d=Value(0)).order_by())
    rows += list(
        active.values_list("status", "queue_id")
        .annotate(
            n=Count("id"),
            h=Count("id", filter=Q(created_at__gte=hour_since)),
            d=Count("id", filter=Q(created_at__gte=day_since)),
        )
        .order_by()
    )
    live_created = {"h": 0, "d": 0}
    for status, queue_id, n, created_hour, created_day in rows:
        live_created["h"] += created_hour or 0
        live_created["d"] += created_day or 0
        if queue_id in names:
            by_queue[names[queue_id]][status] += n or 0
    by_status = {status: sum(counts[status] for counts in by_queue.values()) for status in STATUSES}

    sums = _hourly_sums(user=user, hour_since=hour_since, day_since=day_since, window_since=window_since)
    sums["h_created"] += live_created["h"]
    sums["d_created"] += live_created["d"]
    finished_in_window = sums["w_succeeded"] + sums["w_failed"]
    return TaskStatistics(
        scope="all" if user is None else "own",
        by_status=by_status,
        by_queue=by_queue,
        last_hour=Throughput(hour_since, *(sums[f"h_{c}"] for c in ("created", "succeeded", "failed", "cancelled"))),
        last_24_hours=Throughput(day_since, *(sums[f"d_{c}"] for c in ("created", "succeeded", "failed", "cancelled"))),
        window_hours=window_hours,
        window_since=window_since,
        failure_rate=sums["w_failed"] / finished_in_window if finished_in_window else None,
        mean_wait_seconds=sums["w_wait"] / sums["w_started"] if sums["w_started"] else None,
        mean_run_seconds=sums["w_run"] / sums["w_started"] if sums["w_started"] else None,
        generated_at=now,
        freshness=read_freshness(now=now),
    )


def read_freshness(*, now: datetime | None = None) -> Freshness:
    """Return where reads are answered here and now, and how stale their data may be.

    On the primary: current (and `fallback` when the replica was meant to answer but could not be
    reached). On the replica: its replication lag while both of its threads run;
    with replication stopped (lag NULL), the newest worker heartbeat it holds (workers write
    theirs every few seconds on the primary) bounds how old its data is.
    """
    now = now or timezone.now()
    if read_alias() == PRIMARY:
        return Freshness(source="primary", as_of=now, lag_seconds=0.0, stale=False, fallback=fell_back())
    state = replica_state(REPLICA)
    heartbeat = None
    if not (state.replicating and state.lag_seconds is not None):
        heartbeat = WorkerProcess.objects.aggregate(newest=Max("last_heartbeat_at"))["newest"]
    as_of, lag = freshness(state, heartbeat=heartbeat, now=now)
    stale = lag is None or lag > settings.DATABASE_REPLICA_MAX_LAG_SECONDS
    return Freshness(source="replica", as_of=as_of, lag_seconds=None if lag is None else round(lag, 3), stale=stale)


def _hourly_sums(
    *, user: AbstractBaseUser | None, hour_since: datetime, day_since: datetime, window_since: datetime
) -> dict[str, float]:
    """Sum the hourly counters of three windows in one query over the widest one."""
    rows = TaskHourlyStats.objects.filter(hour__gte=min(hour_since, day_since, window_since))
    if user is not None:
        rows = rows.filter(owner=user)
    aggregates = {}
    for prefix, since in (("h", hour_since), ("d", day_since)):
        for column in ("created", "succeeded", "failed", "cancelled"):
            aggregates[f"{prefix}_{column}"] = Sum(column, filter=Q(hour__gte=since))
    for key, column in (("succeeded", "succeeded"), ("failed", "failed"), ("started", "started")):
        aggregates[f"w_{key}"] = Sum(column, filter=Q(hour__gte=window_since))
    aggregates["w_wait"] = Sum("wait_seconds_sum", filter=Q(hour__gte=window_since))
    aggregates["w_run"] = Sum("run_seconds_sum", filter=Q(hour__gte=window_since))
    return {key: value or 0 for key, value in rows.aggregate(**aggregates).items()}


def queue_statuses(*, now: datetime | None = None) -> list[QueueStatus]:
    """Return every queue's limits, backlog, live workers and fair-share figures, in three queries.

    Two more when some queue has a per-key limit (its running keys) or a rate limit (its buckets).

    The backlog and the owners with runnable tasks come from one read of the fair index's
    (status, queue_id, owner_id, priority, run_at) entries of pending and running rows, never
    the rows themselves; live workers are the rows whose heartbeat is fresh.
    """
    now = now or timezone.now()
    backlog: dict[int, dict] = {}
    owners: dict[int, int] = {}
    due = Q(run_at__lte=now)
    # Grouped by (status, queue): the order of the index, so no temporary table.
    for row in (
        TaskQueue.objects.filter(status__in=ACTIVE_STATUSES)
        .values("status", "queue_id")
        .annotate(
            n=Count("id"),
            due=Count("id", filter=due),
            # The earliest run_at of all: a runnable task's when there is one (no filter to evaluate per row).
            earliest=Min("run_at"),
            owners=Count("owner_id", distinct=True, filter=due),
        )
        .order_by()
    ):
        counts = backlog.setdefault(row["queue_id"], {})
        if row["status"] == TaskStatus.RUNNING:
            counts["running"] = row["n"]
        else:
            oldest = row["earliest"] if row["earliest"] is not None and row["earliest"] <= now else None
            counts.update(pending=row["due"], scheduled=row["n"] - row["due"], oldest=oldest)
            owners[row["queue_id"]] = row["owners"]
    fresh_since = now - timedelta(seconds=settings.TASKHUB_WORKER_STALE_SECONDS)
    workers = list(WorkerProcess.objects.filter(last_heartbeat_at__gte=fresh_since).values_list("queues", flat=True))
    queues = list(QueueConfig.objects.order_by("name"))
    shares = fair_shares(now, queues, owners=owners)
    statuses = []
    for queue in queues:
        row = backlog.get(queue.id, {})
        oldest = row.get("oldest")
        statuses.append(
            QueueStatus(
                name=queue.name,
                is_paused=queue.is_paused,
                max_concurrency=queue.max_concurrency,
                max_active_per_user=queue.max_active_per_user,
                pending=row.get("pending", 0),
                scheduled=row.get("scheduled", 0),
                running=row.get("running", 0),
                oldest_pending_age_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else None,
                live_workers=sum(1 for queues in workers if _serves(queues, queue.name)),
                fairness=queue.fairness,
                per_key_concurrency=queue.per_key_concurrency,
                rate_limit=queue.rate_limit,
                rate_limit_per_key=queue.rate_limit_per_key,
                active_owners=shares.owners.get(queue.id, 0),
                keys_at_limit=shares.keys_at_limit(queue),
                throttled_by_rate=shares.throttled.get(queue.id, 0),
            )
        )
    return statuses


@dataclass(frozen=True)
class FairShares:
    owners: dict[int, int]  # queue id -> owners with runnable tasks
    running_keys: dict[int, list[int]]  # queue id -> running tasks of each concurrency key
    throttled: dict[int, int]  # queue id -> claims held back by the rate limit

    def keys_at_limit(self, queue: QueueConfig) -> int:
        """Return how many of the queue's concurrency keys have per_key_concurrency tasks running."""
        return sum(1 for n in self.running_keys.get(queue.pk, []) if n >= queue.per_key_concurrency > 0)


def fair_shares(now: datetime, queues: list[QueueConfig], *, owners: dict[int, int] | None = None) -> FairShares:
    """Read the fair-share figures of `queues`: only active rows, through task_fair_idx and task_claim_idx.

    `owners` (queue id → owners with runnable tasks) is counted here unless the caller has it.
    The running keys are read only for queues with a per-key limit (running rows are few: they
    are counted here rather than grouped by the database), the buckets only for rate-limited ones.
    """
    if owners is None:
        # Grouped by queue in the order of task_fair_idx (status, queue, owner, ...): no temporary table.
        owners = dict(
            TaskQueue.objects.filter(status=TaskStatus.PENDING, run_at__lte=now)
            .values_list("queue_id")
            .annotate(n=Count("owner_id", distinct=True))
            .order_by()
        )
    keyed = [queue.pk for queue in queues if queue.per_key_concurrency]
    running_keys: dict[int, list[int]] = {}
    if keyed:
        running = collections.Counter(
            (queue_id, fold_key(key))
            for queue_id, key in TaskQueue.objects.filter(
                status=TaskStatus.RUNNING, queue_id__in=keyed, concurrency_key__isnull=False
            ).values_list("queue_id", "concurrency_key")
        )
        for (queue_id, _key), n in running.items():
            running_keys.setdefault(queue_id, []).append(n)
    throttled: dict[int, int] = {}
    rated = [queue.pk for queue in queues if queue.rate_limit]
    if rated:
        throttled = dict(
            QueueRateBucket.objects.filter(queue_id__in=rated)
            .values_list("queue_id")
            .annotate(n=Sum("throttled"))
            .order_by()
        )
    return FairShares(owners=owners, running_keys=running_keys, throttled=throttled)


def owner_queue_settings(*, user: AbstractBaseUser) -> OwnerQueueSettings:
    """Return a user's queue settings (the defaults, unsaved, when staff never set any)."""
    return OwnerQueueSettings.objects.filter(user_id=user.pk).first() or OwnerQueueSettings(user_id=user.pk)


def _serves(queues: object, name: str) -> bool:
    """Return True if a worker listening on `queues` (empty = all) takes tasks from `name`."""
    return not queues or (isinstance(queues, list) and name in queues)


def task_list(
    *,
    user: AbstractBaseUser,
    status: str | None = None,
    queue: str | None = None,
    task_type: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    owner: str | None = None,
) -> QuerySet[TaskQueue]:
    """Return the tasks `user` may see (staff: everyone's), filtered; newest first.

    `owner` is a user id or username; for non-staff it can only narrow their own tasks.
    Unknown queue, type or owner values give an empty result, not an error.
    """
    # Queues are prefetched, not joined: with a join MySQL may drive the page from queue_config
    # through the queue_id index and sort every task of the queue instead of walking (owner, id).
    tasks = TaskQueue.objects.visible_to(user).prefetch_related("queue")
    if owner is not None:
        match = Q(username=owner)
        if owner.isdecimal() and len(owner) < 19:
            match |= Q(pk=int(owner))
        tasks = tasks.filter(owner_id__in=list(get_user_model().objects.filter(match).values_list("pk", flat=True)))
    filters = {
        "status": status,
        "queue__name": queue,
        "task_type": task_type,
        "created_at__gte": created_after,
        "created_at__lt": created_before,
    }
    return tasks.filter(**{lookup: value for lookup, value in filters.items() if value is not None}).order_by("-id")
