"""What callers ask of schedules (REST, admin): check, then write; and what they read of one.

When a schedule fires is `tasks.schedules`' business; creating its tasks is `tasks.transitions`'.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from tasks import schedules, services, wakeups
from tasks.errors import TaskSpecInvalid
from tasks.models import (
    DEFAULT_QUEUE_NAME,
    QueueConfig,
    Schedule,
    ScheduleFire,
    ScheduleMisfire,
    ScheduleOverlap,
    TaskKind,
)
from tasks.specs import TaskSpec

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

NAME_CONSTRAINT = "task_schedule_owner_name_uniq"
NAME_MAX_LENGTH = 100
INTERVAL_MAX_SECONDS = 366 * 24 * 3600
LAST_RUNS = 10
# What describes a schedule, in the order the admin and the API show it.
SCHEDULE_FIELDS = (
    "name",
    "cron",
    "interval_seconds",
    "timezone",
    "kind",
    "task_type",
    "payload",
    "queue",
    "priority",
    "max_attempts",
    "overlap",
    "misfire",
    "is_paused",
)
# The fields a caller sets (the kind follows from the task); the timing ones move the next fire time.
EDITABLE_FIELDS = tuple(name for name in SCHEDULE_FIELDS if name != "kind")
TIMING_FIELDS = {"cron", "interval_seconds", "timezone", "is_paused"}
DEFAULTS: dict[str, Any] = {
    "cron": "",
    "interval_seconds": None,
    "timezone": "UTC",
    "payload": {},
    "queue": DEFAULT_QUEUE_NAME,
    "priority": 0,
    "max_attempts": None,
    "overlap": ScheduleOverlap.ALLOW,
    "misfire": ScheduleMisfire.RUN_ONCE,
    "is_paused": False,
}


def schedules_visible_to(user: AbstractBaseUser) -> QuerySet[Schedule]:
    """Return the schedules `user` may see and change: their own; staff, everyone's."""
    rows = Schedule.objects.select_related("queue")
    return rows if user.is_staff else rows.filter(owner=user)


def schedule_create(*, user: AbstractBaseUser, data: dict[str, Any]) -> Schedule:
    """Create a schedule owned by `user`; raise TaskSpecInvalid naming the bad fields."""
    values = {**DEFAULTS, **data}
    queue = check(values, owner_id=user.pk)
    schedule = Schedule(owner=user, **_model_values(values, queue), created_at=timezone.now())
    return schedule_save(schedule, timing_changed=True)


def schedule_update(*, schedule: Schedule, changes: dict[str, Any]) -> Schedule:
    """Change a schedule; a new timing (or a resume) takes effect from now, a pause stops it firing."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    current = {name: getattr(schedule, name) for name in EDITABLE_FIELDS if name != "queue"}
    current["queue"] = schedule.queue.name
    if "cron" in changes and changes["cron"] and "interval_seconds" not in changes:
        current["interval_seconds"] = None  # switching to a cron expression
    if changes.get("interval_seconds") and "cron" not in changes:
        current["cron"] = ""  # switching to an interval
    values = {**current, **changes}
    queue = check(values, owner_id=schedule.owner_id)
    for name, value in _model_values(values, queue).items():
        setattr(schedule, name, value)
    timing_changed = any(changes.get(name, current[name]) != current[name] for name in TIMING_FIELDS if name in changes)
    return schedule_save(schedule, timing_changed=timing_changed)


def schedule_set_paused(*, schedule: Schedule, paused: bool) -> Schedule:
    """Pause (no fire times until resumed) or resume (the next fire time after now) a schedule."""
    return schedule_update(schedule=schedule, changes={"is_paused": paused})


def schedule_delete(*, schedule: Schedule) -> None:
    """Delete a schedule and its fire rows; its tasks stay (they no longer name it)."""
    schedule.delete()


def schedule_next_fire_at(schedule: Schedule, now: datetime | None = None) -> datetime | None:
    """Return where a schedule's next_fire_at belongs after a change at `now`: NULL while paused."""
    if schedule.is_paused:
        return None
    return schedules.next_after(schedules.Timing.of(schedule), now or timezone.now())


@dataclass(frozen=True)
class ScheduleDetail:
    schedule: Schedule
    next_fire_times: list[datetime]
    last_runs: list[ScheduleFire]


def schedule_detail(*, schedule: Schedule, now: datetime | None = None) -> ScheduleDetail:
    """Return a schedule with its next 5 fire times and its last runs (with their tasks' status)."""
    now = now or timezone.now()
    upcoming: list[datetime] = []
    if not schedule.is_paused:
        start = schedule.next_fire_at
        if start is not None and start > now:
            upcoming = [start, *schedules.next_fire_times(schedules.Timing.of(schedule), start, 4)]
        else:
            upcoming = schedules.next_fire_times(schedules.Timing.of(schedule), now, 5)
    # Served by task_schedule_fire_uniq (schedule_id, fire_time).
    runs = list(schedule.fires.select_related("task").order_by("-fire_time")[:LAST_RUNS])
    return ScheduleDetail(schedule=schedule, next_fire_times=upcoming, last_runs=runs)


# --- Helpers ------------------------------------------------------------------------------------


def check(values: dict[str, Any], *, owner_id: int) -> QueueConfig:
    """Raise TaskSpecInvalid naming every bad field of a schedule (REST and admin); return its queue."""
    errors: dict[str, str] = {}
    name = values.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= NAME_MAX_LENGTH:
        errors["name"] = _("A name of 1 to %(max)d characters.") % {"max": NAME_MAX_LENGTH}
    cron, interval = values.get("cron") or "", values.get("interval_seconds")
    if bool(cron) == (interval is not None):
        errors["cron"] = _("Give exactly one of cron and interval_seconds.")
    elif cron:
        problem = schedules.cron_problem(cron)
        if problem:
            errors["cron"] = problem
    elif not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= INTERVAL_MAX_SECONDS:
        errors["interval_seconds"] = _("Whole seconds from 1 to %(max)d.") % {"max": INTERVAL_MAX_SECONDS}
    problem = schedules.timezone_problem(values.get("timezone"))
    if problem:
        errors["timezone"] = problem
    if values.get("overlap") not in ScheduleOverlap.values:
        errors["overlap"] = _("One of: %(choices)s.") % {"choices": ", ".join(ScheduleOverlap.values)}
    if values.get("misfire") not in ScheduleMisfire.values:
        errors["misfire"] = _("One of: %(choices)s.") % {"choices": ", ".join(ScheduleMisfire.values)}
    spec = TaskSpec(
        task_type=values.get("task_type"),
        payload=values.get("payload"),
        queue=values.get("queue"),
        priority=values.get("priority"),
        max_attempts=values.get("max_attempts"),
        kind=values.get("kind", TaskKind.HANDLER),
    )
    if spec.kind == TaskKind.DJANGO:
        errors.update(_django_task_problems(spec))
    task = None
    try:
        task = services.task_build(user_id=owner_id, spec=spec)
    except TaskSpecInvalid as exc:
        errors.update({name: message for name, message in exc.errors.items() if name not in errors})
    if errors:
        raise TaskSpecInvalid(errors)
    return task.queue


def _django_task_problems(spec: TaskSpec) -> dict[str, str]:
    """A Django task schedule (admin only): its path must name a `@task`, its payload hold JSON args and kwargs."""
    from tasks.backends.results import resolve
    from tasks.backends.task import check_arguments

    errors: dict[str, str] = {}
    try:
        resolve(spec.task_type)
    except Exception as exc:  # ImportError, NotATask, an error while importing the module
        errors["task_type"] = _("Not the dotted path of a Django task: %(error)s") % {"error": exc}
    payload = spec.payload
    if not isinstance(payload, dict) or set(payload) - {"args", "kwargs"}:
        errors["payload"] = _('A Django task\'s payload is {"args": [...], "kwargs": {...}}.')
    else:
        try:
            check_arguments(payload.get("args", []), payload.get("kwargs", {}))
        except (TypeError, ValueError) as exc:
            errors["payload"] = str(exc)
    return errors


def _model_values(values: dict[str, Any], queue: QueueConfig) -> dict[str, Any]:
    fields = {name: values[name] for name in EDITABLE_FIELDS if name != "queue"}
    if "kind" in values:
        fields["kind"] = values["kind"]
    fields["name"] = fields["name"].strip()
    fields["cron"] = " ".join(fields["cron"].split()) if fields["cron"] else ""
    return {**fields, "queue": queue}


def schedule_save(schedule: Schedule, *, timing_changed: bool) -> Schedule:
    """Save a checked schedule; a new timing (or a resume) moves its next fire time to after now.

    An existing schedule's row gets only what a caller describes (and next_fire_at when it moves
    here): a worker firing it meanwhile has moved next_fire_at and last_fired_at, which a stale
    copy must not put back.
    """
    fields = None if schedule._state.adding else ["owner", *SCHEDULE_FIELDS, "updated_at"]
    if timing_changed or (schedule.next_fire_at is None and not schedule.is_paused):
        schedule.next_fire_at = schedule_next_fire_at(schedule)
        if fields is not None:
            fields.append("next_fire_at")
    try:
        with transaction.atomic():
            schedule.save(update_fields=fields)
            if not schedule.is_paused:
                # Idle workers tick schedules only when the earliest fire time they read is due:
                # this one may come sooner (any worker may fire it, whatever its queues).
                wakeups.notify([wakeups.ANY_QUEUE])
    except IntegrityError as exc:
        if NAME_CONSTRAINT in str(exc) or "task_schedule.owner_id, task_schedule.name" in str(exc):
            raise TaskSpecInvalid({"name": _("You already have a schedule with this name.")}) from exc
        raise
    return schedule
