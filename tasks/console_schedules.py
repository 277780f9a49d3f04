"""The console's Schedules page: every schedule, its timing and last fire, pause/resume and "run now".

Staff only (`console.staff_only`: 403 `staff_only` for anyone else). The actions are POSTs with
CSRF that need the "change schedule" permission and call the services the REST API calls
(`schedule_services.schedule_set_paused`, `schedules.schedule_run_now`). The list reads
`task_schedule` by keyset on its primary key, PAGE_SIZE at a time; each schedule's last fire is
the newest row of `task_schedule_fire` through task_schedule_fire_uniq (schedule_id, fire_time),
one index probe per schedule of the page. `task_queue` is read only by primary key (the status of
the task each last fire created).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from tasks import schedule_services, schedules
from tasks.console import _page, error_response, staff_only
from tasks.errors import QuotaExceeded, TaskSpecInvalid
from tasks.models import Schedule, ScheduleFire, TaskQueue

PAGE_SIZE = 50
CHANGE_PERMISSION = "tasks.change_schedule"


class CursorInvalid(ValueError):
    pass


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _row(schedule: Schedule, fire: ScheduleFire | None, task_status: str | None) -> dict[str, Any]:
    return {
        "id": schedule.pk,
        "name": schedule.name,
        "owner": schedule.owner.get_username(),
        "queue": schedule.queue.name,
        "task_type": schedule.task_type,
        "cron": schedule.cron,
        "interval_seconds": schedule.interval_seconds,
        "timezone": schedule.timezone,
        "is_paused": schedule.is_paused,
        "next_fire_at": _iso(schedule.next_fire_at),
        "last_fire": None
        if fire is None
        else {
            "fire_time": fire.fire_time.isoformat(),
            "outcome": fire.outcome,
            "outcome_label": fire.get_outcome_display(),
            "task_id": fire.task_id,
            "task_status": task_status,
        },
        "pause_url": reverse("taskhub-console-schedule-pause", args=[schedule.pk]),
        "resume_url": reverse("taskhub-console-schedule-resume", args=[schedule.pk]),
        "run_now_url": reverse("taskhub-console-schedule-run-now", args=[schedule.pk]),
        "admin_url": reverse("admin:tasks_schedule_change", args=[schedule.pk]),
    }


def schedules_data(after: str = "") -> dict[str, Any]:
    """One page of schedules by id (keyset: `after` is the previous page's `next`); raise CursorInvalid."""
    try:
        cursor = int(after) if after else 0
    except ValueError:
        cursor = -1
    if cursor < 0:
        raise CursorInvalid(after)
    # Served by task_schedule_fire_uniq (schedule_id, fire_time): the newest entry, one probe.
    newest_fire = ScheduleFire.objects.filter(schedule=OuterRef("pk")).order_by("-fire_time").values("pk")[:1]
    rows = list(
        Schedule.objects.select_related("owner", "queue")
        .filter(pk__gt=cursor)
        .annotate(last_fire_pk=Subquery(newest_fire))
        .order_by("pk")[: PAGE_SIZE + 1]
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    fire_ids = [row.last_fire_pk for row in rows if row.last_fire_pk is not None]
    fires = {fire.pk: fire for fire in ScheduleFire.objects.filter(pk__in=fire_ids)} if fire_ids else {}
    task_ids = [fire.task_id for fire in fires.values() if fire.task_id is not None]
    statuses = dict(TaskQueue.objects.filter(pk__in=task_ids).values_list("pk", "status")) if task_ids else {}
    result = []
    for schedule in rows:
        fire = fires.get(schedule.last_fire_pk)
        result.append(_row(schedule, fire, statuses.get(fire.task_id) if fire else None))
    return {
        "schedules": result,
        "next": rows[-1].pk if more else None,
        "generated_at": timezone.now().isoformat(),
    }


def _labels() -> dict[str, str]:
    return {
        "refresh_ok": _("live"),
        "refresh_failed": _("could not refresh; retrying"),
        "no_schedules": _("No schedules."),
        "pause": _("Pause"),
        "resume": _("Resume"),
        "run_now": _("Run now"),
        "paused": _("paused"),
        "active": _("active"),
        "every": _("every %(seconds)s s"),
        "never": _("never"),
        "more": _("More"),
    }


@staff_only
@require_GET
def schedules_page(request: HttpRequest) -> HttpResponse:
    response = _page(request, "admin/taskhub/console_schedules.html", _("Schedules"), schedules_data())
    response.context_data["labels"] = _labels()
    response.context_data["can_change"] = request.user.has_perm(CHANGE_PERMISSION)
    return response


@staff_only
@require_GET
def schedules_json(request: HttpRequest) -> JsonResponse:
    try:
        return JsonResponse(schedules_data(request.GET.get("after", "")))
    except CursorInvalid:
        return error_response(400, "invalid_cursor", _("after must be a schedule id."), field="after")


def _schedule_or_error(request: HttpRequest, pk: int) -> Schedule | JsonResponse:
    if not request.user.has_perm(CHANGE_PERMISSION):
        return error_response(403, "permission_denied", _("You may not change schedules."))
    schedule = Schedule.objects.select_related("queue").filter(pk=pk).first()
    if schedule is None:
        return error_response(404, "unknown_schedule", _("There is no schedule #%(id)s.") % {"id": pk})
    return schedule


def _set_paused(request: HttpRequest, pk: int, *, paused: bool) -> JsonResponse:
    found = _schedule_or_error(request, pk)
    if isinstance(found, JsonResponse):
        return found
    try:
        schedule = schedule_services.schedule_set_paused(schedule=found, paused=paused)
    except TaskSpecInvalid as exc:  # the schedule no longer passes the checks (e.g. its task type is gone)
        field, message = next(iter(exc.errors.items()))
        return error_response(400, "invalid", message, field=field, errors=exc.errors)
    message = _("Schedule %(name)s paused.") if paused else _("Schedule %(name)s resumed.")
    return JsonResponse(
        {"schedule": schedule.pk, "is_paused": schedule.is_paused, "message": message % {"name": schedule.name}}
    )


@staff_only
@require_POST
def schedule_pause(request: HttpRequest, pk: int) -> JsonResponse:
    return _set_paused(request, pk, paused=True)


@staff_only
@require_POST
def schedule_resume(request: HttpRequest, pk: int) -> JsonResponse:
    return _set_paused(request, pk, paused=False)


@staff_only
@require_POST
def schedule_run_now(request: HttpRequest, pk: int) -> JsonResponse:
    """Create a run of the schedule now (as the REST run-now): 201 with the task id."""
    found = _schedule_or_error(request, pk)
    if isinstance(found, JsonResponse):
        return found
    try:
        task = schedules.schedule_run_now(schedule=found)
    except QuotaExceeded as exc:
        return error_response(429, "quota_exceeded", str(exc))
    except TaskSpecInvalid as exc:
        field, message = next(iter(exc.errors.items()))
        return error_response(400, "invalid", message, field=field, errors=exc.errors)
    return JsonResponse(
        {
            "schedule": found.pk,
            "task": task.pk,
            "message": _("Schedule %(name)s: task #%(id)s created.") % {"name": found.name, "id": task.pk},
        },
        status=201,
    )
