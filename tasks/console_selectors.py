"""Reads for the console's queues panel and charts: live depth from the fair index, history from the minute rollup.

Nothing here reads `task_queue`'s history. Depth, oldest runnable age, workers and limits are
`tasks.selectors.queue_statuses` (the fair index's pending and running entries); throughput,
failure rate and percentiles are sums over `task_minute_stats` rows of a window, read through
task_minute_stats_minute_idx (every queue) or task_minute_stats_uniq (one queue). The 24-hour and
7-day charts read the hours before the hour rollup's mark from `task_hour_stats` (its hour index or
task_hour_stats_uniq) and only the minutes after it, so they cost hours, not minutes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from tasks.histograms import RUN_COLUMNS, WAIT_COLUMNS, percentiles
from tasks.hour_stats import rolled_up_to
from tasks.models import QueueConfig, TaskHourStats, TaskMinuteStats
from tasks.selectors import queue_statuses

SPARKLINE_MINUTES = 60
COUNT_COLUMNS = ("started", "succeeded", "failed", "cancelled")
# range -> (points, minutes per point)
CHART_RANGES: dict[str, tuple[int, int]] = {"1h": (60, 1), "24h": (24, 60), "7d": (7 * 24, 60)}


class UnknownQueue(Exception):
    """The chart was asked for a queue that does not exist."""


def _minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _failure_rate(succeeded: int, failed: int) -> float | None:
    return failed / (succeeded + failed) if succeeded + failed else None


@dataclass(frozen=True)
class QueueOverview:
    name: str
    is_paused: bool
    pending: int  # runnable now
    scheduled: int  # pending, not before a later time
    running: int
    oldest_runnable_age_seconds: float | None
    live_workers: int
    limits: dict[str, Any]
    succeeded_last_hour: int
    failed_last_hour: int
    cancelled_last_hour: int
    failure_rate_last_hour: float | None  # failed / (succeeded + failed)
    finished_per_minute: list[int]  # the sparkline: SPARKLINE_MINUTES points, oldest first
    failed_per_minute: list[int]


def queues_overview(*, now: datetime | None = None) -> list[QueueOverview]:
    """Return each queue's live depth, limits and last hour (per minute), in the queue statuses' queries and one more."""
    now = now or timezone.now()
    since = _minute(now) - timedelta(minutes=SPARKLINE_MINUTES - 1)
    minutes: dict[str, dict[datetime, tuple[int, int, int]]] = {}
    for name, minute, succeeded, failed, cancelled in TaskMinuteStats.objects.filter(minute__gte=since).values_list(
        "queue__name", "minute", "succeeded", "failed", "cancelled"
    ):
        minutes.setdefault(name, {})[_minute(minute)] = (succeeded, failed, cancelled)
    overview = []
    for status in queue_statuses(now=now):
        rows = minutes.get(status.name, {})
        series = [rows.get(since + timedelta(minutes=offset), (0, 0, 0)) for offset in range(SPARKLINE_MINUTES)]
        succeeded, failed, cancelled = (sum(point[index] for point in series) for index in range(3))
        overview.append(
            QueueOverview(
                name=status.name,
                is_paused=status.is_paused,
                pending=status.pending,
                scheduled=status.scheduled,
                running=status.running,
                oldest_runnable_age_seconds=status.oldest_pending_age_seconds,
                live_workers=status.live_workers,
                limits={
                    "max_concurrency": status.max_concurrency,
                    "max_active_per_user": status.max_active_per_user,
                    "fairness": status.fairness,
                    "rate_limit": status.rate_limit,
                    "rate_limit_per_key": status.rate_limit_per_key,
                    "per_key_concurrency": status.per_key_concurrency,
                },
                succeeded_last_hour=succeeded,
                failed_last_hour=failed,
                cancelled_last_hour=cancelled,
                failure_rate_last_hour=_failure_rate(succeeded, failed),
                finished_per_minute=[sum(point) for point in series],
                failed_per_minute=[point[1] for point in series],
            )
        )
    return overview


@dataclass(frozen=True)
class ChartPoint:
    at: datetime
    started: int
    succeeded: int
    failed: int
    cancelled: int
    wait: dict[str, float | None]  # p50, p95, p99 in seconds
    run: dict[str, float | None]


@dataclass(frozen=True)
class Chart:
    range: str
    queue: str | None
    step_seconds: int
    since: datetime
    points: list[ChartPoint]
    totals: dict[str, int]
    wait: dict[str, float | None]  # over the whole range
    run: dict[str, float | None]


def chart(*, range_name: str, queue_name: str | None = None, now: datetime | None = None) -> Chart:
    """Return started/succeeded/failed/cancelled and wait/run percentiles per minute (1h) or per hour (24h, 7d).

    The 1-hour chart is one query: the window's minute rows summed per minute. The hourly charts
    read the hour rollup's mark, the hours before it from `task_hour_stats` and the minutes from
    it on summed per hour by the database (TruncHour): correct however far the mark lags.
    Raise KeyError for an unknown range, UnknownQueue for an unknown queue.
    """
    points_wanted, step_minutes = CHART_RANGES[range_name]
    now = now or timezone.now()
    if step_minutes == 1:
        first = _minute(now) - timedelta(minutes=points_wanted - 1)
    else:
        first = _minute(now).replace(minute=0) - timedelta(hours=points_wanted - 1)
    queue_id = None
    if queue_name:
        queue_id = QueueConfig.objects.filter(name=queue_name).values_list("pk", flat=True).first()
        if queue_id is None:
            raise UnknownQueue(queue_name)
    columns = (*COUNT_COLUMNS, *WAIT_COLUMNS, *RUN_COLUMNS)
    sum_of = {f"s_{column}": Sum(column) for column in columns}
    sums: dict[datetime, dict[str, int]] = {}

    def add(point: datetime, row: dict[str, Any]) -> None:
        into = sums.setdefault(_minute(point), dict.fromkeys(columns, 0))
        for column in columns:
            into[column] += int(row[f"s_{column}"] or 0)

    if step_minutes == 1:
        rows = TaskMinuteStats.objects.filter(minute__gte=first)
        if queue_id is not None:
            rows = rows.filter(queue_id=queue_id)
        for row in rows.values("minute").annotate(**sum_of).order_by():
            add(row["minute"], row)
    else:
        # Hours in [first, split) from the hour rollup, minutes from split on; the mark is on the hour.
        last = first + timedelta(hours=points_wanted)
        split = min(max(rolled_up_to() or first, first), last)
        if split > first:
            hours = TaskHourStats.objects.filter(hour__gte=first, hour__lt=split)
            if queue_id is not None:
                hours = hours.filter(queue_id=queue_id)
            for row in hours.values("hour").annotate(**sum_of).order_by():
                add(row["hour"], row)
        minutes = TaskMinuteStats.objects.filter(minute__gte=split)
        if queue_id is not None:
            minutes = minutes.filter(queue_id=queue_id)
        minutes = minutes.annotate(point=TruncHour("minute", tzinfo=UTC))
        for row in minutes.values("point").annotate(**sum_of).order_by():
            add(row["point"], row)
    totals = dict.fromkeys(columns, 0)
    points = []
    for offset in range(points_wanted):
        at = first + timedelta(minutes=offset * step_minutes)
        values = sums.get(at) or dict.fromkeys(columns, 0)
        for column in columns:
            totals[column] += values[column]
        points.append(
            ChartPoint(
                at=at,
                **{column: values[column] for column in COUNT_COLUMNS},
                wait=percentiles([values[column] for column in WAIT_COLUMNS]),
                run=percentiles([values[column] for column in RUN_COLUMNS]),
            )
        )
    return Chart(
        range=range_name,
        queue=queue_name or None,
        step_seconds=step_minutes * 60,
        since=first,
        points=points,
        totals={column: totals[column] for column in COUNT_COLUMNS},
        wait=percentiles([totals[column] for column in WAIT_COLUMNS]),
        run=percentiles([totals[column] for column in RUN_COLUMNS]),
    )


def as_json(value: Any) -> Any:
    """Return a selector's dataclass (or a list of them) as JSON-ready data."""
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return dataclasses.asdict(value)
