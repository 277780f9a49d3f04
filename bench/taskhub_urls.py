"""TaskHub's URL map plus one reference endpoint the auth section compares against.

`/bench/one-read` answers like a light API endpoint but without authentication: its only work is
one read-only statement, run the way the user lookup runs (after Django's health check ping).
It measures what the design's rule "the user is read from the database on each request" costs
by itself on this machine, apart from everything authentication adds.
"""

from __future__ import annotations

from django.db import connection
from django.urls import include, path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.taskhub_side import ONE_READ_PATH


class OneRead(APIView):
    """One `SELECT 1`, no authentication."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return Response({"read": cursor.fetchone()[0]})


urlpatterns = [
    path(ONE_READ_PATH.lstrip("/"), OneRead.as_view()),
    path("", include("config.urls")),
]

handler404 = "core.errors.json_not_found"
handler500 = "core.errors.json_server_error"
