"""Recurring schedules: when each one fires, and firing what is due, from any number of workers.

A schedule fires on a cron expression (5 fields, or 6 with seconds last) read in its IANA time
zone, or every `interval_seconds` counted from its creation. Local times are turned into
instants so that a time the clock skips (spring forward) fires once, at the first valid instant
after it, and a time the clock repeats (fall back) fires once, at its first occurrence.

No leader: every worker ticks (`schedules_fire_due`), and a fire time is claimed by inserting its
`task_schedule_fire` row in the same transaction as the task (`transitions.fire_schedule`): the
node whose INSERT fails on the unique key lost, and says nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from django.conf import settings
from django.db import DatabaseError, IntegrityError
from django.utils import timezone
from django.utils.translation import gettext as _

from core import metrics
from core.db.errors import is_connection_lost, is_retryable_contention
from tasks import services, transitions
from tasks.errors import PayloadTooLarge, QuotaExceeded, TaskSpecInvalid
from tasks.models import (
    Schedule,
    ScheduleFire,
    ScheduleFireOutcome,
    ScheduleMisfire,
    ScheduleOverlap,
    TaskQueue,
)
from tasks.specs import TaskSpec

logger = logging.getLogger("taskhub.schedules")

# Schedules looked at per tick; more due ones wait for the next tick (a second later).
TICK_BATCH = 100
# Fire times of one schedule fired in one tick when it is merely late (not misfired).
CATCH_UP_MAX = 100
FIRE_CONSTRAINT = "task_schedule_fire_uniq"
BROKEN_RETRY_SECONDS = 60


# --- When a schedule fires --------------------------------------------------------------------


def cron_problem(expression: str) -> str | None:
    """Return why `expression` is not a cron expression TaskHub accepts, or None."""
    if not isinstance(expression, str) or len(expression.split()) not in (5, 6):
        return _("A cron expression has 5 fields (minute hour day month weekday), or 6 with seconds last.")
    if not croniter.is_valid(expression):
        return _("Not a valid cron expression: %(expression)s.") % {"expression": repr(expression)}
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return _("This cron expression never fires (a day that no month has?): %(expression)s.") % {
            "expression": repr(expression)
        }
    return None


def timezone_problem(name: str) -> str | None:
    """Return why `name` is not an IANA time zone, or None."""
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return _("Unknown time zone %(name)s: use an IANA name such as Europe/Paris.") % {"name": repr(name)}
    return None


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError("empty time zone")
    return ZoneInfo(name)


@dataclass(frozen=True)
class Timing:
    """What decides a schedule's fire times."""

    cron: str
    interval_seconds: int | None
    timezone: str
    anchor: datetime  # interval schedules count from here (the schedule's creation, whole seconds)

    @classmethod
    def of(cls, schedule: Schedule) -> Timing:
        return cls(
            cron=schedule.cron,
            interval_seconds=schedule.interval_seconds,
            timezone=schedule.timezone,
            anchor=schedule.created_at.replace(microsecond=0),
        )


def next_after(timing: Timing, moment: datetime) -> datetime:
    """Return the first fire time strictly after `moment` (aware, UTC)."""
    if timing.interval_seconds:
        step = timing.interval_seconds
        elapsed = (moment - timing.anchor).total_seconds()
        count = max(int(elapsed // step) + 1, 1)
        return (timing.anchor + timedelta(seconds=count * step)).astimezone(UTC)
    zone = _zone(timing.timezone)
    start = moment.astimezone(zone).replace(tzinfo=None)
    times = croniter(timing.cron, start)
    while True:
        instant = _instant(times.get_next(datetime), zone)
        if instant > moment:
            return instant


def latest_at_or_before(timing: Timing, moment: datetime) -> datetime | None:
    """Return the last fire time at or before `moment`, or None if there is none since the anchor."""
    if timing.interval_seconds:
        step = timing.interval_seconds
        count = int((moment - timing.anchor).total_seconds() // step)
        return (timing.anchor + timedelta(seconds=count * step)).astimezone(UTC) if count >= 1 else None
    zone = _zone(timing.timezone)
    start = moment.astimezone(zone).replace(tzinfo=None) + timedelta(microseconds=1)
    times = croniter(timing.cron, start)
    for _step in range(10_000):
        instant = _instant(times.get_prev(datetime), zone)
        if instant < timing.anchor:
            return None
        if instant <= moment:
            return instant
    return None


def next_fire_times(timing: Timing, after: datetime, count: int = 5) -> list[datetime]:
    """Return the next `count` fire times after `after`."""
    times: list[datetime] = []
    moment = after
    for _step in range(count):
        moment = next_after(timing, moment)
        times.append(moment)
    return times


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """Return the instant (UTC) a naive local wall time of `zone` fires at.

    A repeated wall time (fall back) is its first occurrence (fold=0). A skipped one (spring
    forward) is the first instant after the gap: the earliest whose wall time is later.
    """
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == local:
        return first
    # In a gap: fold=1 reads it with the offset after the transition (an earlier instant),
    # fold=0 with the one before (a later instant); the transition lies between.
    low = int(local.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    high = int(first.timestamp()) + 1
    while low < high:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) > local:
            high = middle
        else:
            low = middle + 1
    return datetime.fromtimestamp(low, UTC)


def due_fire_times(schedule: Schedule, now: datetime, grace: float | None = None) -> list[datetime]:
    """Return the fire times of `schedule` to fire at `now`, oldest first.

    Merely late (the oldest due time within the misfire grace): every due time. After downtime
    (older than that): `run_once` fires the latest due time once, `skip` fires nothing. Never a
    time before the schedule's `next_fire_at`, which never precedes its creation.
    """
    first = schedule.next_fire_at
    if first is None or first > now:
        return []
    grace = settings.TASKHUB_SCHEDULE_MISFIRE_GRACE_SECONDS if grace is None else grace
    timing = Timing.of(schedule)
    if (now - first).total_seconds() <= grace:
        times = [first]
        while len(times) <= CATCH_UP_MAX:
            following = next_after(timing, times[-1])
            if following > now:
                return times
            times.append(following)
    if schedule.misfire == ScheduleMisfire.RUN_ONCE:
        latest = latest_at_or_before(timing, now)
        return [max(latest, first)] if latest is not None else [first]
    return []


# --- Firing ---------------------------------------------------------------------------------


@dataclass
class TickResult:
    fired: int = 0
    skipped: int = 0
    lost: int = 0
    failed: int = 0


def schedules_fire_due(*, now: datetime | None = None, grace: float | None = None) -> TickResult:
    """Fire every due fire time of every due schedule; safe from any number of workers at once.

    1. Read the due schedules (task_schedule_due_idx: next_fire_at <= now; paused ones are NULL).
    2. For each, the fire times to fire (`due_fire_times`: catch-up or misfire policy).
    3. Claim each in its own transaction with its task (`fire`); a lost claim is counted only.
    """
    now = now or timezone.now()
    result = TickResult()
    due = Schedule.objects.filter(next_fire_at__lte=now).select_related("queue").order_by("next_fire_at")
    for schedule in list(due[:TICK_BATCH]):
        try:
            _fire_due(schedule, now, grace, result)
        except Exception as exc:
            if isinstance(exc, DatabaseError) and (is_connection_lost(exc) or is_retryable_contention(exc)):
                raise  # the worker backs off and reconnects (`WorkerDatabase.call`)
            # One broken schedule must not stop the worker, nor the other schedules: it is tried
            # again a minute later, not at every tick.
            result.failed += 1
            logger.exception("schedule %s (%s) could not fire: %s", schedule.pk, schedule.name, exc)
            transitions.schedule_advance(schedule, next_fire_at=now + timedelta(seconds=BROKEN_RETRY_SECONDS))
    return result


def _fire_due(schedule: Schedule, now: datetime, grace: float | None, result: TickResult) -> None:
    timing = Timing.of(schedule)
    following = next_after(timing, now)
    times = due_fire_times(schedule, now, grace)
    if not times:
        transitions.schedule_advance(schedule, next_fire_at=following)
        result.skipped += 1
        metrics.SCHEDULE_FIRES.labels(outcome="misfire_skipped").inc()
        return
    for fire_time in times:
        row = fire(schedule, fire_time, next_fire_at=following)
        if row is None:
            result.lost += 1
        elif row.outcome == ScheduleFireOutcome.FIRED:
            result.fired += 1
        else:
            result.skipped += 1


def fire(
    schedule: Schedule,
    fire_time: datetime,
    *,
    next_fire_at: datetime | None,
    outcome: str = ScheduleFireOutcome.FIRED,
) -> ScheduleFire | None:
    """Claim one fire time of `schedule` and create its task; return its fire row, None if another node had it.

    `overlap=skip` records the time as skipped while a run of the schedule is active; a full
    quota, or a task that no longer passes the checks (its handler gone), is recorded as skipped.
    """
    task: TaskQueue | None = None
    if schedule.overlap == ScheduleOverlap.SKIP and _has_active_run(schedule):
        outcome = ScheduleFireOutcome.SKIPPED_OVERLAP
    else:
        try:
            task = services.task_build(user_id=schedule.owner_id, spec=_spec(schedule, fire_time))
        except (TaskSpecInvalid, PayloadTooLarge) as exc:
            logger.error("schedule %s (%s): its task no longer passes the checks: %s", schedule.pk, schedule.name, exc)
            outcome = ScheduleFireOutcome.INVALID
    try:
        try:
            row = transitions.fire_schedule(
                schedule, fire_time, task=task, outcome=outcome, next_fire_at=next_fire_at, check=services.quota_check
            )
        except QuotaExceeded as exc:
            logger.warning("schedule %s (%s): not fired at %s: %s", schedule.pk, schedule.name, fire_time, exc)
            task, outcome = None, ScheduleFireOutcome.SKIPPED_QUOTA
            row = transitions.fire_schedule(schedule, fire_time, task=None, outcome=outcome, next_fire_at=next_fire_at)
    except DatabaseError as exc:
        if not _lost_to_another_node(exc):
            raise
        metrics.SCHEDULE_FIRES_LOST.inc()
        logger.debug("schedule %s: fire time %s claimed by another node", schedule.pk, fire_time)
        return None
    metrics.SCHEDULE_FIRES.labels(outcome=outcome).inc()
    if task is not None:
        metrics.SCHEDULE_LATENESS.observe(max((task.created_at - fire_time).total_seconds(), 0.0))
    return row


def schedule_run_now(*, schedule: Schedule) -> TaskQueue:
    """Create a run of `schedule` now, whatever its timing, pause or overlap; QuotaExceeded if the quota is full."""
    now = timezone.now()
    task = services.task_build(user_id=schedule.owner_id, spec=_spec(schedule, now))
    transitions.fire_schedule(
        schedule, now, task=task, outcome=ScheduleFireOutcome.MANUAL, next_fire_at=None, check=services.quota_check
    )
    metrics.SCHEDULE_FIRES.labels(outcome=ScheduleFireOutcome.MANUAL).inc()
    return task


def _lost_to_another_node(exc: DatabaseError) -> bool:
    """A duplicate fire row or a deadlock: another node claimed this fire time (solid_queue#638)."""
    if isinstance(exc, IntegrityError):
        text = str(exc)
        return FIRE_CONSTRAINT in text or "task_schedule_fire.schedule_id, task_schedule_fire.fire_time" in text
    return is_retryable_contention(exc)


def _has_active_run(schedule: Schedule) -> bool:
    # Served by task_active_schedule_idx (active_schedule_id: NULL unless pending or running).
    return TaskQueue.objects.filter(active_schedule_id=schedule.pk).exists()


def _spec(schedule: Schedule, fire_time: datetime) -> TaskSpec:
    return TaskSpec(
        task_type=schedule.task_type,
        payload=schedule.payload,
        queue=schedule.queue.name,
        priority=schedule.priority,
        run_at=fire_time,
        max_attempts=schedule.max_attempts,
        kind=schedule.kind,
        schedule_id=schedule.pk,
    )
