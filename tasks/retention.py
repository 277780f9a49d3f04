"""Retention: delete finished tasks older than a cutoff, in small batches, counters in step."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Max, Q

from tasks import transitions
from tasks.models import FINISHED_STATUSES, ScheduleFire, TaskHourStats, TaskMinuteStats, TaskQueue


@dataclass
class PurgeResult:
    deleted: int = 0
    batches: int = 0


def tasks_purge_finished(
    *,
    before: datetime,
    statuses: Iterable[str] = FINISHED_STATUSES,
    batch_size: int = 1000,
    max_batches: int | None = None,
    on_batch: Callable[[PurgeResult], None] | None = None,
) -> PurgeResult:
    """Delete tasks that finished (and were created) before `before`, `batch_size` at a time.

    1. Walk the `created_at` index with a (created_at, id) cursor, so no row is read twice and
       pending/running rows in the range cost one look each.
    2. Delete each batch by primary key in its own short transaction (`transitions.purge`, which keeps
       the statistics counters in step), so workers and requests are never blocked for long and
       the command is safe to run from cron while traffic flows.
    """
    statuses = [status for status in statuses if status in FINISHED_STATUSES]
    if not statuses:
        raise ValueError(f"only finished statuses can be purged: {', '.join(FINISHED_STATUSES)}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    result = PurgeResult()
    cursor: tuple[datetime, int] | None = None
    while max_batches is None or result.batches < max_batches:
        page = TaskQueue.objects.filter(created_at__lt=before)
        if cursor is not None:
            page = page.filter(Q(created_at__gt=cursor[0]) | Q(created_at=cursor[0], id__gt=cursor[1]))
        rows = list(
            page.order_by("created_at", "id").values_list("created_at", "id", "status", "finished_at")[:batch_size]
        )
        if not rows:
            break
        cursor = (rows[-1][0], rows[-1][1])
        doomed = [
            pk for _, pk, status, finished_at in rows if status in statuses and finished_at and finished_at < before
        ]
        if doomed:
            # Re-checked under lock by the purge: a task retried meanwhile stays.
            result.deleted += transitions.purge(doomed, statuses=statuses, before=before)
        result.batches += 1
        if on_batch is not None:
            on_batch(result)
    return result


def schedule_fires_prune(*, before: datetime) -> int:
    """Delete schedule fire rows older than `before`, keeping each schedule's latest; return how many.

    The latest stays so that a fire time can never be claimed twice: a worker that read a stale
    next_fire_at still finds its row. Each schedule's rows go in one DELETE on task_schedule_fire_uniq.
    """
    deleted = 0
    latest = ScheduleFire.objects.filter(fire_time__lt=before).values("schedule_id").annotate(last=Max("fire_time"))
    for row in latest.order_by():
        newest = ScheduleFire.objects.filter(schedule_id=row["schedule_id"]).aggregate(last=Max("fire_time"))["last"]
        cutoff = min(before, newest)
        deleted += ScheduleFire.objects.filter(schedule_id=row["schedule_id"], fire_time__lt=cutoff).delete()[0]
    return deleted


def minute_stats_prune(*, before: datetime, batch_size: int = 1000) -> int:
    """Delete per-minute rollup rows of minutes before `before`, `batch_size` at a time; return how many.

    Each batch reads the oldest ids through task_minute_stats_minute_idx and deletes them by primary
    key in its own statement, so a worker upserting this minute's rows is never held up for long.
    """
    return _prune_oldest(TaskMinuteStats.objects.filter(minute__lt=before).order_by("minute"), batch_size)


def hour_stats_prune(*, before: datetime, batch_size: int = 1000) -> int:
    """Delete hour rollup rows of hours that began before `before`, the same way (task_hour_stats_hour_idx)."""
    return _prune_oldest(TaskHourStats.objects.filter(hour__lt=before).order_by("hour"), batch_size)


def _prune_oldest(oldest, batch_size: int) -> int:
    deleted = 0
    while True:
        pks = list(oldest.values_list("pk", flat=True)[:batch_size])
        if not pks:
            return deleted
        deleted += oldest.model.objects.filter(pk__in=pks).delete()[0]
