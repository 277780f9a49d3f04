"""Statistics counters kept in step with `task_queue`, in the same transaction as each change.

Statistics must not cost more as the table grows, so finished-task counts and hourly events
live in two small tables (`task_status_count`, `task_hourly_stats`). Only `tasks.transitions`
writes them, inside the transaction of the change it counts; `rebuild()` recomputes them from
scratch (the minute rollup within its retention window).

A task is counted once, when it finishes: its status, and in the hourly table its creation (in
the hour it was created) and its outcome (in the hour it finished). The per-minute rollup
(`task_minute_stats`, per queue) gets its start and wait time (in the minute it started) and its
outcome and run time (in the minute it finished), with a `tasks.histograms` bucket for each time;
it is history, like the hourly outcomes: a retry or a delete leaves it as it is. Nothing is written when a
task is created, so enqueueing is a single INSERT; live (pending and running) tasks are few by
design and the selectors count them, and their creations, through indexes. A task that goes
back to pending is uncounted the same way, and counted again when it finishes again.

Rows are touched in sorted key order (status counts first, then hourly rows) so concurrent
writers always lock them in the same order. One row of a table is an UPDATE (an INSERT only the
first time); several, as a batch of many owners' tasks brings, one multi-row upsert per table:
a round trip per table, not per owner. The minute rollup is always one multi-row upsert: its rows
are new every minute, so an UPDATE first would often be a wasted round trip.

The hour rollup (`task_hour_stats`) is not written here: `tasks.hour_stats` rolls it up from the
minute rows, off the claim path, with this module's upsert clause (`upsert_clause`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction

from tasks.histograms import RUN_COLUMNS, WAIT_COLUMNS, bucket_of
from tasks.models import (
    FINISHED_STATUSES,
    MINUTE_STATS_RETENTION_DAYS,
    TaskHourlyStats,
    TaskMinuteStats,
    TaskQueue,
    TaskStatusCount,
)

# Counter rows per upsert statement, and parameters per statement: within SQLite's 999.
UPSERT_ROWS = 90
UPSERT_PARAMETERS = 999
HOURLY_EVENT_COLUMNS = ("created", "succeeded", "failed", "cancelled", "started", "wait_seconds_sum", "run_seconds_sum")
MINUTE_EVENT_COLUMNS = (
    "started",
    "succeeded",
    "failed",
    "cancelled",
    "wait_seconds_sum",
    "run_seconds_sum",
    *WAIT_COLUMNS,
    *RUN_COLUMNS,
)


@dataclass
class _HourDelta:
    values: dict[str, float] = field(default_factory=lambda: dict.fromkeys(HOURLY_EVENT_COLUMNS, 0))


@dataclass
class _MinuteDelta:
    values: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MINUTE_EVENT_COLUMNS, 0))


def hour_of(moment: datetime) -> datetime:
    """Return the UTC hour that contains `moment`."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def minute_of(moment: datetime) -> datetime:
    """Return the UTC minute that contains `moment`."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _count_minutes(
    minutes: dict[tuple[int, datetime], _MinuteDelta],
    queue_id: int,
    status: str,
    created_at: datetime,
    started_at: datetime | None,
    finished_at: datetime,
    since: datetime | None = None,
) -> None:
    """Add one finished task to the minute rollup (rows before `since` left out)."""
    finished = minute_of(finished_at)
    if since is None or finished >= since:
        delta = minutes[(queue_id, finished)].values
        delta[status] += 1
        if started_at is not None:
            run = max((finished_at - started_at).total_seconds(), 0.0)
            delta["run_seconds_sum"] += run
            delta[RUN_COLUMNS[bucket_of(run)]] += 1
    if started_at is not None:
        started = minute_of(started_at)
        if since is None or started >= since:
            delta = minutes[(queue_id, started)].values
            wait = max((started_at - created_at).total_seconds(), 0.0)
            delta["started"] += 1
            delta["wait_seconds_sum"] += wait
            delta[WAIT_COLUMNS[bucket_of(wait)]] += 1


def record_finished(tasks: Iterable[TaskQueue]) -> None:
    """Count tasks that just reached a finished status (their fields already updated)."""
    statuses: dict[tuple[int, int, str], int] = defaultdict(int)
    hourly: dict[tuple[int, datetime, int], _HourDelta] = defaultdict(_HourDelta)
    minutes: dict[tuple[int, datetime], _MinuteDelta] = defaultdict(_MinuteDelta)
    for task in tasks:
        if task.status not in FINISHED_STATUSES or task.finished_at is None:
            raise ValueError(f"task {task.pk} is not finished (status {task.status!r})")
        statuses[(task.owner_id, task.queue_id, task.status)] += 1
        _count_minutes(minutes, task.queue_id, task.status, task.created_at, task.started_at, task.finished_at)
        hourly[(task.owner_id, hour_of(task.created_at), task.queue_id)].values["created"] += 1
        delta = hourly[(task.owner_id, hour_of(task.finished_at), task.queue_id)].values
        delta[task.status] += 1
        if task.started_at is not None:
            delta["started"] += 1
            delta["wait_seconds_sum"] += max((task.started_at - task.created_at).total_seconds(), 0.0)
            delta["run_seconds_sum"] += max((task.finished_at - task.started_at).total_seconds(), 0.0)
    _apply(status_deltas=statuses, hourly=hourly, minutes=minutes)


def record_reopened(tasks: Iterable[tuple[int, int, str, datetime]]) -> None:
    """Uncount finished tasks that went back to pending: (owner_id, queue_id, old_status, created_at) each.

    Their creation is uncounted too: as live tasks the selectors count it again, and it is
    counted here once more when they finish.
    """
    statuses: dict[tuple[int, int, str], int] = defaultdict(int)
    hourly: dict[tuple[int, datetime, int], _HourDelta] = defaultdict(_HourDelta)
    for owner_id, queue_id, old_status, created_at in tasks:
        if old_status in FINISHED_STATUSES:
            statuses[(owner_id, queue_id, old_status)] -= 1
            hourly[(owner_id, hour_of(created_at), queue_id)].values["created"] -= 1
    _apply(status_deltas=statuses, hourly=hourly)


def record_deleted(tasks: Iterable[tuple[int, int, str]]) -> None:
    """Uncount deleted tasks' statuses: (owner_id, queue_id, status) each. Hourly events stay history."""
    statuses: dict[tuple[int, int, str], int] = defaultdict(int)
    for owner_id, queue_id, status in tasks:
        if status in FINISHED_STATUSES:
            statuses[(owner_id, queue_id, status)] -= 1
    _apply(status_deltas=statuses, hourly={})


def minute_stats_since(now: datetime) -> datetime:
    """Return the first minute the rollup keeps at `now`: MINUTE_STATS_RETENTION_DAYS back."""
    return minute_of(now) - timedelta(days=MINUTE_STATS_RETENTION_DAYS)


def rebuild(*, now: datetime | None = None) -> None:
    """Recompute the counter tables from `task_queue`, atomically; the minute rollup within its retention window."""
    now = now or datetime.now(UTC)
    since = minute_stats_since(now)
    with transaction.atomic():
        TaskStatusCount.objects.all().delete()
        TaskHourlyStats.objects.all().delete()
        TaskMinuteStats.objects.all().delete()
        statuses: dict[tuple[int, int, str], int] = defaultdict(int)
        hourly: dict[tuple[int, datetime, int], _HourDelta] = defaultdict(_HourDelta)
        minutes: dict[tuple[int, datetime], _MinuteDelta] = defaultdict(_MinuteDelta)
        rows = TaskQueue.objects.values_list(
            "owner_id", "queue_id", "status", "created_at", "started_at", "finished_at"
        ).order_by()
        for owner_id, queue_id, status, created_at, started_at, finished_at in rows.iterator(chunk_size=5000):
            if status not in FINISHED_STATUSES:
                continue
            statuses[(owner_id, queue_id, status)] += 1
            if finished_at is None:
                continue
            _count_minutes(minutes, queue_id, status, created_at, started_at, finished_at, since)
            hourly[(owner_id, hour_of(created_at), queue_id)].values["created"] += 1
            delta = hourly[(owner_id, hour_of(finished_at), queue_id)].values
            delta[status] += 1
            if started_at is not None:
                delta["started"] += 1
                delta["wait_seconds_sum"] += max((started_at - created_at).total_seconds(), 0.0)
                delta["run_seconds_sum"] += max((finished_at - started_at).total_seconds(), 0.0)
        _apply(status_deltas=statuses, hourly=hourly, minutes=minutes)


def _apply(
    *,
    status_deltas: dict[tuple[int, int, str], int],
    hourly: dict[tuple[int, datetime, int], _HourDelta],
    minutes: dict[tuple[int, datetime], _MinuteDelta] | None = None,
) -> None:
    minutes = minutes or {}
    if not status_deltas and not hourly and not minutes:
        return
    if not connection.in_atomic_block:
        raise RuntimeError("counters must change in the same transaction as the tasks they count")
    statuses = [(key, delta) for key, delta in sorted(status_deltas.items()) if delta]
    hours = [(key, delta.values) for key, delta in sorted(hourly.items()) if any(delta.values.values())]
    minute_rows = [
        (
            (queue_id, connection.ops.adapt_datetimefield_value(minute)),
            tuple(delta.values[column] for column in MINUTE_EVENT_COLUMNS),
        )
        for (queue_id, minute), delta in sorted(minutes.items())
        if any(delta.values.values())
    ]
    with connection.cursor() as cursor:
        if len(statuses) == 1:
            _add_status_count(cursor, *statuses[0][0], statuses[0][1])
        elif statuses:
            rows = [((owner_id, queue_id, status), (delta,)) for (owner_id, queue_id, status), delta in statuses]
            _upsert_many(
                cursor, table="task_status_count", key=("owner_id", "queue_id", "status"), values=("count",), rows=rows
            )
        if len(hours) == 1:
            _add_hourly(cursor, *hours[0][0], hours[0][1])
        elif hours:
            rows = [
                (
                    (owner_id, connection.ops.adapt_datetimefield_value(hour), queue_id),
                    tuple(values[column] for column in HOURLY_EVENT_COLUMNS),
                )
                for (owner_id, hour, queue_id), values in hours
            ]
            _upsert_many(
                cursor,
                table="task_hourly_stats",
                key=("owner_id", "hour", "queue_id"),
                values=HOURLY_EVENT_COLUMNS,
                rows=rows,
            )
        if minute_rows:
            _upsert_many(
                cursor,
                table="task_minute_stats",
                key=("queue_id", "minute"),
                values=MINUTE_EVENT_COLUMNS,
                rows=minute_rows,
            )


def _add_status_count(cursor, owner_id: int, queue_id: int, status: str, delta: int) -> None:
    # UPDATE first: in steady state the row exists and an UPDATE by unique key locks just it
    # (an upsert takes next-key locks on MySQL and deadlocks more readily).
    cursor.execute(
        "UPDATE task_status_count SET count = count + %s WHERE owner_id = %s AND queue_id = %s AND status = %s",
        [delta, owner_id, queue_id, status],
    )
    if cursor.rowcount:
        return
    _upsert(
        cursor,
        table="task_status_count",
        key={"owner_id": owner_id, "queue_id": queue_id, "status": status},
        values={"count": delta},
    )


def _add_hourly(cursor, owner_id: int, hour: datetime, queue_id: int, values: dict[str, float]) -> None:
    hour_param = connection.ops.adapt_datetimefield_value(hour)
    assignments = ", ".join(f"{column} = {column} + %s" for column in HOURLY_EVENT_COLUMNS)
    cursor.execute(
        f"UPDATE task_hourly_stats SET {assignments} WHERE owner_id = %s AND hour = %s AND queue_id = %s",
        [values[column] for column in HOURLY_EVENT_COLUMNS] + [owner_id, hour_param, queue_id],
    )
    if cursor.rowcount:
        return
    _upsert(
        cursor,
        table="task_hourly_stats",
        key={"owner_id": owner_id, "hour": hour_param, "queue_id": queue_id},
        values={column: values[column] for column in HOURLY_EVENT_COLUMNS},
    )


def _upsert(cursor, *, table: str, key: dict[str, object], values: dict[str, object]) -> None:
    """Insert a counter row, or add to it when a concurrent writer inserted it first."""
    _upsert_many(
        cursor, table=table, key=tuple(key), values=tuple(values), rows=[(tuple(key.values()), tuple(values.values()))]
    )


def _upsert_many(
    cursor, *, table: str, key: tuple[str, ...], values: tuple[str, ...], rows: list[tuple[tuple, tuple]]
) -> None:
    """Add to many counter rows (inserting the missing ones) in one statement per UPSERT_ROWS rows (fewer when they are wide), in key order.

    A batch of tasks of many owners (a fair claim's) then costs one round trip, not one per owner.
    """
    columns = [*key, *values]
    row_marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
    tail = upsert_clause(key, values, add=True)
    per_statement = min(UPSERT_ROWS, UPSERT_PARAMETERS // len(columns))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        marks = ", ".join([row_marks] * len(chunk))
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {marks} {tail}",
            [value for key_values, counts in chunk for value in (*key_values, *counts)],
        )


def upsert_clause(key: tuple[str, ...], values: tuple[str, ...], *, add: bool) -> str:
    """Return an INSERT's clause for rows whose key exists: add the new values to them, or set them (SQL only)."""
    if connection.vendor == "mysql":
        # VALUES(col) is deprecated on MySQL 8.0.20+ but is the only spelling MariaDB accepts.
        updates = ", ".join(f"{column} = {column + ' + ' if add else ''}VALUES({column})" for column in values)
        return f"ON DUPLICATE KEY UPDATE {updates}"
    updates = ", ".join(f"{column} = {column + ' + ' if add else ''}excluded.{column}" for column in values)
    return f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
