"""Test-only views that misuse the database connection the ways production code once did.

Wired with `@pytest.mark.urls("diagnostics.tests.urls")`; the real URL map is included too.
"""

from __future__ import annotations

import logging

from django.db import OperationalError, connection, transaction
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import include, path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from tasks.models import QueueConfig

logger = logging.getLogger("taskhub.test")

LEAKED_QUEUE = "uncommitted-leak"
COMMITTED_QUEUE = "committed-after-leak"


def _begin_raw(cursor) -> None:
    # Behind Django's back: its own state stays "autocommit, no transaction".
    cursor.execute("BEGIN" if connection.vendor == "sqlite" else "START TRANSACTION")


def leave_open(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        _begin_raw(cursor)
    QueueConfig.objects.create(name=LEAKED_QUEUE)
    return JsonResponse({"connection_id": _connection_id()})


def abandon_atomic(request: HttpRequest) -> JsonResponse:
    transaction.atomic().__enter__()
    QueueConfig.objects.create(name=LEAKED_QUEUE)
    return JsonResponse({"connection_id": _connection_id()})


def set_autocommit_off(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SET autocommit = 0")
    QueueConfig.objects.create(name=LEAKED_QUEUE)
    return JsonResponse({"connection_id": _connection_id()})


def stream_open(request: HttpRequest) -> StreamingHttpResponse:
    def body():
        yield b"first,"
        with connection.cursor() as cursor:
            _begin_raw(cursor)
        QueueConfig.objects.create(name=LEAKED_QUEUE)
        yield b"second"

    return StreamingHttpResponse(body())


def state(request: HttpRequest) -> JsonResponse:
    """Report the session as the request found it."""
    return JsonResponse({"connection_id": _connection_id(), "in_transaction": _in_transaction()})


def commit_one(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        QueueConfig.objects.create(name=COMMITTED_QUEUE)
    return JsonResponse({"connection_id": _connection_id()})


def one_query(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"queues": QueueConfig.objects.count()})


def no_query(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def short_wait_timeout(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION wait_timeout = 1")
    return JsonResponse({"connection_id": _connection_id()})


def sleep(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT SLEEP(30)")
    return JsonResponse({"slept": True})


def gone_away(request: HttpRequest) -> JsonResponse:
    QueueConfig.objects.exists()
    raise OperationalError(2006, "MySQL server has gone away")


def log_line(request: HttpRequest) -> JsonResponse:
    logger.info("inside the view")
    return JsonResponse({"ok": True})


class DrfGoneAway(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get(self, request) -> Response:
        QueueConfig.objects.exists()
        raise OperationalError(2013, "Lost connection to server during query")


class FailingMiddleware:
    """Fails before any view runs, the way a session or auth middleware does when the DB is gone."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if request.path.startswith("/t/middleware-fails"):
            raise OperationalError(2013, "Lost connection to server during query")
        return self.get_response(request)


def _connection_id() -> int | None:
    if connection.vendor != "mysql":
        return id(connection.connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return cursor.fetchone()[0]


def _in_transaction() -> bool:
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return connection.connection.in_transaction
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@in_transaction")
        return bool(cursor.fetchone()[0])


urlpatterns = [
    path("t/leave-open/", leave_open),
    path("t/abandon-atomic/", abandon_atomic),
    path("t/autocommit-off/", set_autocommit_off),
    path("t/stream-open/", stream_open),
    path("t/state/", state),
    path("t/commit/", commit_one),
    path("t/one-query/", one_query),
    path("t/no-query/", no_query),
    path("t/short-wait/", short_wait_timeout),
    path("t/sleep/", sleep),
    path("t/gone-away/", gone_away),
    path("t/drf-gone-away/", DrfGoneAway.as_view()),
    path("t/log/", log_line),
    path("", include("config.urls")),
]
handler404 = "core.errors.json_not_found"
handler500 = "core.errors.json_server_error"
