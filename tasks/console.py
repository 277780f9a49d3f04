"""The operator console under the staff dashboard: failure groups and bulk actions by filter.

Staff only: anyone else gets 403 `staff_only` (JSON), whatever the URL. Every change is a POST
with Django's CSRF check. Each read is bounded whatever the size of `task_queue`: groups from
`task_failure_group` by keyset on (last_seen, key), a group's tasks by keyset on
task_failure_group_idx, the audit list by keyset on the bulk actions' primary key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from tasks import bulk
from tasks.models import BulkAction, BulkActionKind, FailureGroup, QueueConfig, TaskQueue, TaskStatus

REFRESH_SECONDS = 3
GROUPS_PAGE = 50
GROUP_TASKS_PAGE = 50
ACTIONS_PAGE = 50
CHANGE_PERMISSION = "tasks.change_taskqueue"
DELETE_PERMISSION = "tasks.delete_taskqueue"


def error_response(status: int, code: str, detail: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code, **extra}, status=status)


def with_names(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set each task row's `queue` and `owner` names from its `queue_id` and `owner_id`, by primary key.

    Read apart, not joined: with a join in a read of task rows by id, MariaDB's planner may start
    from `queue_config` and walk a queue's whole history through the foreign key's index.
    """
    queues = dict(QueueConfig.objects.filter(pk__in={r["queue_id"] for r in rows}).values_list("pk", "name"))
    users = get_user_model().objects.filter(pk__in={r["owner_id"] for r in rows})
    owners = dict(users.values_list("pk", "username"))
    for row in rows:
        row["queue"], row["owner"] = queues.get(row["queue_id"]), owners.get(row["owner_id"])
    return rows


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """403 `staff_only` for anyone but active staff; CSRF-checked; never cached."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_staff):
            return error_response(403, "staff_only", _("The console is for staff only."))
        return view(request, *args, **kwargs)

    return never_cache(csrf_protect(wrapped))


def _labels() -> dict[str, str]:
    return {
        "no_groups": _("No failure groups."),
        "no_actions": _("No bulk actions yet."),
        "retry_all": _("Retry all"),
        "delete_all": _("Delete all"),
        "traceback": _("Example traceback"),
        "refresh_ok": _("live"),
        "refresh_failed": _("could not refresh; retrying"),
        "queued": _("Bulk action #%(id)s queued."),
        "more": _("More"),
    }


def _page(request: HttpRequest, template: str, title: str, data: dict[str, Any]) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": title,
        "initial": data,
        "labels": _labels(),
        "refresh_seconds": REFRESH_SECONDS,
        "actions": [(kind.value, kind.label) for kind in bulk.BY_FILTER],
        "statuses": TaskStatus.choices,
        "queues": list(QueueConfig.objects.order_by("name").values_list("name", flat=True)),
        "filter_fields": bulk.FILTER_FIELDS,
    }
    return TemplateResponse(request, template, context)


# --- Failure groups --------------------------------------------------------------------------


def _group_row(group: FailureGroup) -> dict[str, Any]:
    return {
        "key": group.key,
        "task_type": group.task_type,
        "exception": group.exception,
        "fingerprint": group.fingerprint,
        "count": group.count,
        "first_seen": group.first_seen.isoformat(),
        "last_seen": group.last_seen.isoformat(),
        "example_task_id": group.example_task_id,
        "example_error": group.example_error,
        "tasks_url": reverse("taskhub-console-group-tasks", args=[group.key]),
    }


def failure_groups_data(after: str = "") -> dict[str, Any]:
    """One page of groups, most recently seen first; `after` is the previous page's `next` ("<last_seen>|<key>")."""
    rows = FailureGroup.objects.order_by("-last_seen", "key")
    seen, _sep, key = after.partition("|")
    moment = parse_datetime(seen) if seen else None
    if moment is not None:
        rows = rows.filter(last_seen__lt=moment) | rows.filter(last_seen=moment, key__gt=key)
    groups = list(rows[: GROUPS_PAGE + 1])
    more = len(groups) > GROUPS_PAGE
    groups = groups[:GROUPS_PAGE]
    return {
        "groups": [_group_row(group) for group in groups],
        "next": f"{groups[-1].last_seen.isoformat()}|{groups[-1].key}" if more else None,
        "bulk_url": reverse("taskhub-console-bulk"),
        "generated_at": datetime.now().astimezone().isoformat(),
    }


@staff_only
@require_GET
def failures_page(request: HttpRequest) -> HttpResponse:
    return _page(request, "admin/taskhub/console_failures.html", _("Failure groups"), failure_groups_data())


@staff_only
@require_GET
def failures_data(request: HttpRequest) -> JsonResponse:
    return JsonResponse(failure_groups_data(request.GET.get("after", "")))


@staff_only
@require_GET
def group_tasks(request: HttpRequest, key: str) -> JsonResponse:
    """A group's tasks by keyset on task_failure_group_idx: `?after=<id>`."""
    try:
        after = int(request.GET.get("after") or 0)
    except ValueError:
        return error_response(400, "invalid_cursor", _("after must be a task id."))
    rows = list(
        TaskQueue.objects.filter(failure_group_id=key, pk__gt=after)
        .order_by("pk")
        .values("pk", "status", "owner_id", "queue_id", "created_at", "finished_at")[: GROUP_TASKS_PAGE + 1]
    )
    more = len(rows) > GROUP_TASKS_PAGE
    rows = rows[:GROUP_TASKS_PAGE]
    return JsonResponse({"tasks": rows, "next": rows[-1]["pk"] if more else None})


# --- Bulk actions ----------------------------------------------------------------------------


def _action_row(action: BulkAction) -> dict[str, Any]:
    return {
        "id": action.pk,
        "action": action.action,
        "action_label": action.get_action_display(),
        "filters": action.filters,
        "params": action.params,
        "state": action.state,
        "state_label": action.get_state_display(),
        "scanned": action.scanned,
        "changed": action.changed,
        "batches": action.batches,
        "cursor": action.cursor,
        "last_id": action.last_id,
        "error": action.error,
        "by": action.created_by.get_username() if action.created_by else None,
        "created_at": action.created_at.isoformat(),
        "finished_at": action.finished_at.isoformat() if action.finished_at else None,
    }


def bulk_actions_data(before: int | None = None) -> dict[str, Any]:
    """The audit list, newest first, by keyset on the primary key."""
    rows = BulkAction.objects.select_related("created_by").order_by("-id")
    if before:
        rows = rows.filter(pk__lt=before)
    actions = list(rows[: ACTIONS_PAGE + 1])
    more = len(actions) > ACTIONS_PAGE
    actions = actions[:ACTIONS_PAGE]
    return {
        "actions": [_action_row(action) for action in actions],
        "next": actions[-1].pk if more else None,
        "bulk_url": reverse("taskhub-console-bulk"),
        "generated_at": datetime.now().astimezone().isoformat(),
    }


@staff_only
@require_http_methods(["GET", "POST"])
def bulk_page(request: HttpRequest) -> HttpResponse:
    """GET: the bulk-action form and the audit list. POST: record a bulk action (202), or 400/403 with a code."""
    if request.method == "POST":
        return _bulk_create(request)
    return _page(request, "admin/taskhub/console_bulk.html", _("Bulk actions"), bulk_actions_data())


@staff_only
@require_GET
def bulk_data(request: HttpRequest) -> JsonResponse:
    try:
        before = int(request.GET.get("before") or 0) or None
    except ValueError:
        return error_response(400, "invalid_cursor", _("before must be a bulk action id."))
    return JsonResponse(bulk_actions_data(before))


def _bulk_create(request: HttpRequest) -> JsonResponse:
    action = request.POST.get("action", "")
    needed = DELETE_PERMISSION if action == BulkActionKind.DELETE else CHANGE_PERMISSION
    if not request.user.has_perm(needed):
        return error_response(403, "permission_denied", _("You may not run this bulk action."))
    filters = {name: request.POST[name] for name in request.POST if name in bulk.FILTER_FIELDS}
    unknown = [
        name
        for name in request.POST
        if name not in bulk.FILTER_FIELDS and name not in ("action", "priority", "target_queue", "csrfmiddlewaretoken")
    ]
    filters.update({name: request.POST[name] for name in unknown})
    params = {name: request.POST.get(name, "") for name in ("priority", "target_queue")}
    try:
        created = bulk.bulk_action_create(action=action, filters=filters, params=params, by=request.user)
    except bulk.BulkActionInvalid as exc:
        return error_response(400, exc.code, exc.detail, field=exc.field)
    return JsonResponse(
        {"action": _action_row(created), "message": _("Bulk action #%(id)s queued.") % {"id": created.pk}}, status=202
    )
