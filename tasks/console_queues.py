"""The console's queues panel and charts: pages and their JSON feeds.

Staff only (`tasks.console.staff_only`: 403 `staff_only` for anyone else). Pause and resume are the
dashboard's POSTs (`tasks.dashboard.queue_pause`/`queue_resume`, with their permission check);
the reads are `tasks.console_selectors`, from the read replica when one is configured.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from core.db.replica import replica_read
from tasks.console import REFRESH_SECONDS, error_response, staff_only
from tasks.console_selectors import CHART_RANGES, UnknownQueue, as_json, chart, queues_overview
from tasks.dashboard import PAUSE_PERMISSION
from tasks.models import QueueConfig

DEFAULT_RANGE = "1h"


def _labels() -> dict[str, str]:
    return {
        "pause": _("Pause"),
        "resume": _("Resume"),
        "paused": _("paused"),
        "active": _("active"),
        "no_queues": _("No queues."),
        "refresh_ok": _("live"),
        "refresh_failed": _("could not refresh; retrying"),
        "none": _("none"),
        "unlimited": _("unlimited"),
        "per_key": _("per key"),
        "sparkline": _("Tasks finished per minute over the last hour (failed in red)"),
        "started": _("Started"),
        "succeeded": _("Succeeded"),
        "failed": _("Failed"),
        "cancelled": _("Cancelled"),
        "no_data": _("No finished tasks in this range."),
        "wait": _("Wait time"),
        "run": _("Run time"),
    }


def queues_payload() -> dict[str, Any]:
    """The queues panel's data, with each queue's pause and resume URLs."""
    queues = as_json(queues_overview())
    for queue in queues:
        queue["pause_url"] = reverse("taskhub-dashboard-pause", args=[queue["name"]])
        queue["resume_url"] = reverse("taskhub-dashboard-resume", args=[queue["name"]])
    return {"queues": queues, "generated_at": timezone.now().isoformat()}


def _page(request: HttpRequest, template: str, title: str, data: dict[str, Any], **extra: Any) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": title,
        "initial": data,
        "labels": _labels(),
        "refresh_seconds": REFRESH_SECONDS,
        **extra,
    }
    return TemplateResponse(request, template, context)


@staff_only
@require_GET
def queues_page(request: HttpRequest) -> HttpResponse:
    data = replica_read(request.user, queues_payload)
    can_pause = request.user.has_perm(PAUSE_PERMISSION)
    return _page(request, "admin/taskhub/console_queues.html", _("Queues"), data, can_pause=can_pause)


@staff_only
@require_GET
def queues_data(request: HttpRequest) -> JsonResponse:
    return JsonResponse(replica_read(request.user, queues_payload))


def _chart(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    range_name = request.GET.get("range") or DEFAULT_RANGE
    if range_name not in CHART_RANGES:
        return error_response(
            400,
            "invalid_range",
            _("range must be one of: %(ranges)s.") % {"ranges": ", ".join(CHART_RANGES)},
            field="range",
        )
    queue = request.GET.get("queue") or None
    try:
        return as_json(replica_read(request.user, lambda: chart(range_name=range_name, queue_name=queue)))
    except UnknownQueue:
        return error_response(
            400, "unknown_queue", _("There is no queue named %(name)s.") % {"name": queue}, field="queue"
        )


@staff_only
@require_GET
def charts_page(request: HttpRequest) -> HttpResponse:
    data = _chart(request)
    if isinstance(data, JsonResponse):
        return data
    queues = list(QueueConfig.objects.order_by("name").values_list("name", flat=True))
    return _page(
        request, "admin/taskhub/console_charts.html", _("Charts"), data, ranges=list(CHART_RANGES), queues=queues
    )


@staff_only
@require_GET
def charts_data(request: HttpRequest) -> JsonResponse:
    data = _chart(request)
    return data if isinstance(data, JsonResponse) else JsonResponse(data)
