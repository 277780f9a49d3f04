"""The staff dashboard in the admin: a page, its JSON feed, and the pause/resume/retry actions.

Every URL here is wrapped by `admin.site.admin_view` (tasks/dashboard_urls.py): staff only,
CSRF-protected, never cached; anyone else is sent to the admin login. Actions call the same
services as the admin and the API.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_POST

from core.db.replica import replica_read
from tasks import services
from tasks.dashboard_selectors import FAILURE_WINDOW_HOURS, DashboardSnapshot, dashboard_snapshot
from tasks.models import QueueConfig

REFRESH_SECONDS = 5
# One click retries at most this many failed tasks of a type (newest first); click again for more.
RETRY_BATCH = 100
VIEW_PERMISSION = "tasks.view_queueconfig"
PAUSE_PERMISSION = "tasks.change_queueconfig"
RETRY_PERMISSION = "tasks.view_taskqueue"  # as the admin's "Retry selected tasks" action


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


def snapshot_payload(snapshot: DashboardSnapshot) -> dict[str, Any]:
    """Return the snapshot as JSON-ready data, with the URLs of each queue's actions."""
    payload = dataclasses.asdict(snapshot)
    for queue in payload["queues"]:
        queue["pause_url"] = reverse("taskhub-dashboard-pause", args=[queue["name"]])
        queue["resume_url"] = reverse("taskhub-dashboard-resume", args=[queue["name"]])
    payload["retry_url"] = reverse("taskhub-dashboard-retry")
    return payload


def _labels() -> dict[str, str]:
    """Return the words the page's script writes, in the request's language."""
    return {
        "pause": _("Pause"),
        "resume": _("Resume"),
        "paused": _("paused"),
        "active": _("active"),
        "retry": _("Retry failed"),
        "all_queues": _("all"),
        "no_queues": _("No queues."),
        "no_workers": _("No live workers."),
        "no_failures": _("No failed tasks."),
        "refresh_ok": _("live"),
        "refresh_failed": _("could not refresh; retrying"),
        "login_again": _("your session has ended: reload the page and sign in"),
        "truncated": _("Only the newest %(limit)s tasks created since %(since)s were read."),
        "since": _("Since %(since)s."),
        "chart_empty": _("No tasks in the last 24 hours."),
        "chart_title": _(
            "%(hour)s UTC: %(created)s created, %(succeeded)s succeeded, %(failed)s failed, %(cancelled)s cancelled"
        ),
    }


def _done(request: HttpRequest, message: str) -> HttpResponse:
    """Answer an action: JSON with a fresh snapshot for the page's script, else back to the page."""
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"message": message, "snapshot": snapshot_payload(dashboard_snapshot())})
    messages.success(request, message)
    return redirect("taskhub-dashboard")


@require_GET
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """Render the dashboard; its script then refreshes it from `dashboard_data`."""
    _require(request, VIEW_PERMISSION)
    context = {
        **admin.site.each_context(request),
        "title": _("TaskHub dashboard"),
        "snapshot": _snapshot(request),
        "refresh_seconds": REFRESH_SECONDS,
        "failure_window_hours": FAILURE_WINDOW_HOURS,
        "retry_batch": RETRY_BATCH,
        "can_pause": request.user.has_perm(PAUSE_PERMISSION),
        "can_retry": request.user.has_perm(RETRY_PERMISSION),
        "labels": _labels(),
    }
    return TemplateResponse(request, "admin/taskhub/dashboard.html", context)


@require_GET
def dashboard_data(request: HttpRequest) -> JsonResponse:
    """Return the dashboard's data as JSON (polled by the page)."""
    _require(request, VIEW_PERMISSION)
    return JsonResponse(_snapshot(request))


def _snapshot(request: HttpRequest) -> dict:
    """The dashboard's data, from the read replica when one is configured and the user has not just written."""
    return replica_read(request.user, lambda: snapshot_payload(dashboard_snapshot()))


@require_POST
def queue_pause(request: HttpRequest, name: str) -> HttpResponse:
    """Pause a queue: workers stop claiming from it."""
    _require(request, PAUSE_PERMISSION)
    queue = services.queue_set_paused(queue=get_object_or_404(QueueConfig, name=name), paused=True)
    return _done(request, _("Queue %(name)s paused.") % {"name": queue.name})


@require_POST
def queue_resume(request: HttpRequest, name: str) -> HttpResponse:
    """Resume a paused queue."""
    _require(request, PAUSE_PERMISSION)
    queue = services.queue_set_paused(queue=get_object_or_404(QueueConfig, name=name), paused=False)
    return _done(request, _("Queue %(name)s resumed.") % {"name": queue.name})


@require_POST
def failed_retry(request: HttpRequest) -> HttpResponse:
    """Retry the newest failed tasks of one type (those the failure summary counts)."""
    _require(request, RETRY_PERMISSION)
    task_type = request.POST.get("task_type", "")
    since = timezone.now() - timedelta(hours=FAILURE_WINDOW_HOURS)
    retried = services.tasks_retry_failed(task_type=task_type, since=since, limit=RETRY_BATCH, by=request.user)
    message = ngettext(
        "%(count)d failed %(type)s task put back to pending.",
        "%(count)d failed %(type)s tasks put back to pending.",
        retried,
    ) % {"count": retried, "type": task_type}
    return _done(request, message)
