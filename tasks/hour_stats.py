"""The console's hour rollup: `task_minute_stats` summed per queue and hour, rolled up once each hour is over.

The 24-hour and 7-day charts would otherwise sum every minute of their range. `task_hour_stats`
is not written on the worker's finish path (no statement per batch): `roll_up_hours()` recomputes
whole hours from the minute rows with one INSERT ... SELECT ... GROUP BY that sets the hour rows,
and moves the mark on (`task_hour_stats_mark`: every hour before it is rolled up). A busy worker's
heartbeat runs it at most once an hour (`tasks.worker.db`), `rebuild_task_stats` afresh
(`rebuild()`), and `purge_tasks` prunes the hours with the minutes (`tasks.retention`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Sum
from django.db.models.functions import TruncHour

from tasks.counters import MINUTE_EVENT_COLUMNS, hour_of, minute_stats_since, upsert_clause
from tasks.models import TaskHourStats, TaskHourStatsMark, TaskMinuteStats

# An hour is rolled up this long after it ends: batches that finished in it may still be flushing.
HOUR_ROLL_UP_GRACE = timedelta(minutes=5)
# Hours per roll-up statement: a worker that catches up on days of minutes does it a day a turn.
HOUR_ROLL_UP_MAX_HOURS = 24


def rolled_up_to() -> datetime | None:
    """Return the hour rollup's mark: every hour before it is in `task_hour_stats` (None: no hour is)."""
    return TaskHourStatsMark.objects.filter(pk=1).values_list("rolled_up_to", flat=True).first()


def roll_up_hours(*, now: datetime | None = None, max_hours: int | None = HOUR_ROLL_UP_MAX_HOURS) -> bool:
    """Recompute the hour rollup from the minute rows for the hours over since the mark; return True if more remain.

    The hours from one before the mark (it catches late minute writes) up to the last hour that
    ended HOUR_ROLL_UP_GRACE before `now`, at most `max_hours` of them, are summed from
    `task_minute_stats` in one INSERT ... SELECT ... GROUP BY that sets (not adds to) the hour
    rows, then the mark moves on (never back). Idempotent, so two processes may run it at once;
    without a mark it starts at the minute rollup's retention. With nothing to do it is one
    statement (the mark's read); otherwise three.
    """
    now = now or datetime.now(UTC)
    mark = rolled_up_to()
    first = hour_of(minute_stats_since(now))
    if mark is not None:
        first = max(first, hour_of(mark) - timedelta(hours=1))
    end = hour_of(now - HOUR_ROLL_UP_GRACE)
    if mark is not None and end <= mark:
        return False
    if max_hours is not None:
        end = min(end, first + timedelta(hours=max_hours))
    if end <= first:
        return False
    sums = {column: Sum(column) for column in MINUTE_EVENT_COLUMNS}
    select = (
        TaskMinuteStats.objects.filter(minute__gte=first, minute__lt=end)
        .annotate(point=TruncHour("minute", tzinfo=UTC))
        .values("queue_id", "point")
        .annotate(**sums)
        .order_by()
    )
    select_sql, params = select.query.sql_with_params()
    columns = ("queue_id", "hour", *MINUTE_EVENT_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO task_hour_stats ({', '.join(columns)}) {select_sql} "
            + upsert_clause(("queue_id", "hour"), MINUTE_EVENT_COLUMNS, add=False),
            params,
        )
        mark_param = connection.ops.adapt_datetimefield_value(end)
        if connection.vendor == "mysql":
            cursor.execute(
                "INSERT INTO task_hour_stats_mark (id, rolled_up_to) VALUES (1, %s) "
                "ON DUPLICATE KEY UPDATE rolled_up_to = GREATEST(rolled_up_to, VALUES(rolled_up_to))",
                [mark_param],
            )
        else:
            cursor.execute(
                "INSERT INTO task_hour_stats_mark (id, rolled_up_to) VALUES (1, %s) "
                "ON CONFLICT (id) DO UPDATE SET rolled_up_to = MAX(rolled_up_to, excluded.rolled_up_to)",
                [mark_param],
            )
    return end < hour_of(now - HOUR_ROLL_UP_GRACE)


def rebuild(*, now: datetime | None = None) -> None:
    """Roll the hour rollup up afresh from the minute rows (every hour over by `now`), atomically."""
    with transaction.atomic():
        TaskHourStats.objects.all().delete()
        TaskHourStatsMark.objects.all().delete()
        while roll_up_hours(now=now, max_hours=None):
            pass
