"""TaskHub's URL map plus one reference endpoint the auth section compares against.

`/bench/one-read` answers like a light API endpoint but without authentication: its only work is
one read-only statement, run the way the user lookup runs (as the connection's health check with
the `health_check_read` shortcut, after Django's ping without it).
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
from core import shortcuts
from core.db.health_check_read import read_checking_connection


class OneRead(APIView):
    """One `SELECT 1`, no authentication."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        def read() -> int:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone()[0]

        if shortcuts.enabled("health_check_read"):
            return Response({"read": read_checking_connection(read)})
        return Response({"read": read()})


urlpatterns = [
    path(ONE_READ_PATH.lstrip("/"), OneRead.as_view()),
    path("", include("config.urls")),
]

handler404 = "core.errors.json_not_found"
handler500 = "core.errors.json_server_error"
