"""Thin views: the DB monitor and the Prometheus scrape endpoint."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.openapi import error_responses
from diagnostics.monitor import db_monitor_snapshot
from diagnostics.scrape import ScrapeRefused, authorize_scrape, render_metrics


class DbMonitorView(APIView):
    """Staff only: this process's DB connection, the server's connection usage, hygiene counters."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **error_responses(403)})
    def get(self, request: Request) -> Response:
        return Response(db_monitor_snapshot())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve Prometheus text to a `METRICS_TOKEN` bearer or a staff session."""
    if request.method not in ("GET", "HEAD"):
        body = {
            "detail": _('Method "%(method)s" not allowed.') % {"method": request.method},
            "code": "method_not_allowed",
        }
        return JsonResponse(body, status=405, headers={"Allow": "GET, HEAD"})
    try:
        authorize_scrape(request)
    except ScrapeRefused as refused:
        return JsonResponse(
            {"detail": refused.detail, "code": refused.code}, status=refused.status, headers=refused.headers
        )
    body, content_type = render_metrics()
    return HttpResponse(body, content_type=content_type)
