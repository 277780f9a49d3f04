"""Reads for the staff dashboard: throughput per hour, live workers, the task types failing most.

Each read is bounded whatever the size of `task_queue`: throughput comes from the hourly
counters, workers from the heartbeat index, failures from a time window over `task_created_idx`
that is also capped at a number of tasks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, Sum
from django.utils import timezone

from tasks.counters import hour_of
from tasks.models import ACTIVE_STATUSES, TaskHourlyStats, TaskQueue, TaskStatus, WorkerProcess
from tasks.selectors import QueueStatus, queue_statuses, window_start

THROUGHPUT_HOURS = 24
FAILURE_WINDOW_HOURS = 24
# The failure summary reads at most this many of the newest tasks created in its window.
FAILURE_SCAN_LIMIT = 5000
TOP_FAILING_TYPES = 5
LAST_ERROR_MAX_CHARS = 500
WORKERS_SHOWN = 100
THROUGHPUT_COLUMNS = ("created", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class HourThroughput:
    hour: datetime
    created: int
    succeeded: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class FailingType:
    task_type: str
    failed: int
    last_task_id: int
    last_failed_at: datetime | None
    last_error: str


@dataclass(frozen=True)
class FailureSummary:
    since: datetime
    window_hours: int
    scan_limit: int
    truncated: bool  # more tasks were created in the window than were read
    types: list[FailingType]


@dataclass(frozen=True)
class LiveWorker:
    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    heartbeat_age_seconds: float
    tasks_processed: int


@dataclass(frozen=True)
class DashboardSnapshot:
    generated_at: datetime
    queues: list[QueueStatus]
    workers: list[LiveWorker]
    throughput: list[HourThroughput]
    failures: FailureSummary


def hourly_throughput(*, hours: int = THROUGHPUT_HOURS, now: datetime | None = None) -> list[HourThroughput]:
    """Return created/succeeded/failed/cancelled per UTC hour, oldest first, hours without events as zeros."""
    now = now or timezone.now()
    since = window_start(now, hours)
    rows = {
        row["hour"]: row
        for row in TaskHourlyStats.objects.filter(hour__gte=since)
        .values("hour")
        .annotate(**{column: Sum(column) for column in THROUGHPUT_COLUMNS})
        .order_by()
    }
    # The hourly counters count a task's creation when it finishes: live tasks are added here
    # (few, by design; read through the claim index's status prefix).
    live = Counter(
        hour_of(created_at)
        for created_at in TaskQueue.objects.filter(status__in=ACTIVE_STATUSES, created_at__gte=since).values_list(
            "created_at", flat=True
        )
    )
    series = []
    for offset in range(hours):
        hour = since + timedelta(hours=offset)
        row = rows.get(hour, {})
        values = {column: int(row.get(column) or 0) for column in THROUGHPUT_COLUMNS}
        values["created"] += live.get(hour, 0)
        series.append(HourThroughput(hour, **values))
    return series


def top_failing_types(
    *, hours: int = FAILURE_WINDOW_HOURS, limit: int = TOP_FAILING_TYPES, now: datetime | None = None
) -> FailureSummary:
    """Return the task types with the most failed tasks among those created in the last `hours`.

    1. Find where the newest FAILURE_SCAN_LIMIT tasks of the window begin (an index-only walk
       of `task_created_idx`), so a busy day never makes this read more than that.
    2. Count failed tasks per type from there on, keeping each type's newest failed task id.
    3. Read those few tasks' errors by primary key.
    """
    now = now or timezone.now()
    since = now - timedelta(hours=hours)
    # The creation times of the Nth and (N+1)th newest tasks: two of them means there are more.
    # Tasks of one bulk enqueue share a creation time, so at most one bulk (1000) reads past N.
    nth_newest = list(
        TaskQueue.objects.filter(created_at__gte=since)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[FAILURE_SCAN_LIMIT - 1 : FAILURE_SCAN_LIMIT + 1]
    )
    truncated = len(nth_newest) == 2
    scan_since = max(since, nth_newest[0]) if truncated else since
    rows = list(
        TaskQueue.objects.filter(status=TaskStatus.FAILED, created_at__gte=scan_since)
        .values("task_type")
        .annotate(failed=Count("id"), last_id=Max("id"))
        .order_by("-failed", "task_type")[:limit]
    )
    latest = {
        task["id"]: task
        for task in TaskQueue.objects.filter(pk__in=[row["last_id"] for row in rows]).values(
            "id", "error", "finished_at"
        )
    }
    types = []
    for row in rows:
        task = latest.get(row["last_id"], {})
        types.append(
            FailingType(
                task_type=row["task_type"],
                failed=row["failed"],
                last_task_id=row["last_id"],
                last_failed_at=task.get("finished_at"),
                last_error=(task.get("error") or "")[:LAST_ERROR_MAX_CHARS],
            )
        )
    return FailureSummary(
        since=scan_since, window_hours=hours, scan_limit=FAILURE_SCAN_LIMIT, truncated=truncated, types=types
    )


def live_workers(*, now: datetime | None = None) -> list[LiveWorker]:
    """Return the workers whose heartbeat is fresher than TASKHUB_WORKER_STALE_SECONDS (at most 100)."""
    now = now or timezone.now()
    fresh_since = now - timedelta(seconds=settings.TASKHUB_WORKER_STALE_SECONDS)
    rows = WorkerProcess.objects.filter(last_heartbeat_at__gte=fresh_since).order_by("hostname", "pid")
    return [
        LiveWorker(
            worker_id=worker.worker_id,
            hostname=worker.hostname,
            pid=worker.pid,
            queues=list(worker.queues) if isinstance(worker.queues, list) else [],
            concurrency=worker.concurrency,
            started_at=worker.started_at,
            heartbeat_age_seconds=max((now - worker.last_heartbeat_at).total_seconds(), 0.0),
            tasks_processed=worker.tasks_processed,
        )
        for worker in rows[:WORKERS_SHOWN]
    ]


def dashboard_snapshot(*, now: datetime | None = None) -> DashboardSnapshot:
    """Return everything the dashboard shows, read at one moment."""
    now = now or timezone.now()
    return DashboardSnapshot(
        generated_at=now,
        queues=queue_statuses(now=now),
        workers=live_workers(now=now),
        throughput=hourly_throughput(now=now),
        failures=top_failing_types(now=now),
    )
