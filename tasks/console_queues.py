"""The console's queues panel and charts: pages and their JSON feeds.

Staff only (`tasks.console.staff_only`: 403 `staff_only` for anyone else). Pause and resume are the
dashboard's POSTs (`tasks.dashboard.queue_pause`/`queue_resume`, with their permission check);
the reads are `tasks.console_selectors`, from the read replica when one is configured. The limits
are edited in place by a JSON POST validated as the REST `PATCH /api/queues/<name>/` validates
(`QueueUpdateSerializer`, then `services.queue_update`), with its 400 `invalid` naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from core.db.replica import replica_read
from core.errors import first_message
from tasks import services
from tasks.console import REFRESH_SECONDS, error_response, staff_only
from tasks.console_selectors import CHART_RANGES, UnknownQueue, as_json, chart, queues_overview
from tasks.dashboard import PAUSE_PERMISSION
from tasks.models import Fairness, QueueConfig
from tasks.serializers import QueueUpdateSerializer

DEFAULT_RANGE = "1h"
LIMITS_PERMISSION = "tasks.change_queueconfig"
# What the queues panel edits in place; the admin's queue form and the REST PATCH change the rest.
LIMIT_FIELDS = ("max_concurrency", "fairness", "per_key_concurrency", "rate_limit", "rate_limit_per_key")


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
        "edit_limits": _("Edit limits"),
        "limits_of": _("Limits of %(queue)s"),
    }


def queues_payload() -> dict[str, Any]:
    """The queues panel's data, with each queue's pause and resume URLs."""
    queues = as_json(queues_overview())
    for queue in queues:
        queue["pause_url"] = reverse("taskhub-dashboard-pause", args=[queue["name"]])
        queue["resume_url"] = reverse("taskhub-dashboard-resume", args=[queue["name"]])
        queue["limits_url"] = reverse("taskhub-console-queue-limits", args=[queue["name"]])
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
    return _page(
        request,
        "admin/taskhub/console_queues.html",
        _("Queues"),
        data,
        can_pause=request.user.has_perm(PAUSE_PERMISSION),
        can_edit=request.user.has_perm(LIMITS_PERMISSION),
        fairness_choices=Fairness.choices,
    )


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


def _invalid(errors: dict[str, Any]) -> JsonResponse:
    """The REST API's 400 for a bad field (`code` "invalid", `errors` by field), with the first field named."""
    return error_response(400, "invalid", first_message(errors), errors=errors, field=next(iter(errors), None))


@staff_only
@require_POST
def queue_limits(request: HttpRequest, name: str) -> JsonResponse:
    """Change a queue's limits in place: a JSON object of LIMIT_FIELDS, validated as the REST PATCH does."""
    if not request.user.has_perm(LIMITS_PERMISSION):
        return error_response(403, "permission_denied", _("You may not change queues."))
    queue = QueueConfig.objects.filter(name=name).first()
    if queue is None:
        return error_response(404, "unknown_queue", _("There is no queue named %(name)s.") % {"name": name})
    try:
        changes = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        changes = None
    if not isinstance(changes, dict):
        return error_response(400, "parse_error", _("The body must be a JSON object of the limits to change."))
    outside = sorted((set(changes) & set(services.QUEUE_EDITABLE_FIELDS)) - set(LIMIT_FIELDS))
    if outside:
        return _invalid({field: [_("Not a limit the console edits.")] for field in outside})
    serializer = QueueUpdateSerializer(queue, data=changes, partial=True)
    if not serializer.is_valid():
        return _invalid(serializer.errors)
    try:
        queue = services.queue_update(queue=queue, changes=serializer.validated_data)
    except DjangoValidationError as exc:
        return _invalid(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages})
    limits = {field: getattr(queue, field) for field in LIMIT_FIELDS}
    return JsonResponse(
        {"queue": queue.name, "limits": limits, "message": _("Limits of %(name)s saved.") % {"name": queue.name}}
    )
