"""Test-only views that misuse the database connection the ways production code once did.

Wired with `@pytest.mark.urls("diagnostics.tests.urls")`; the real URL map is included too.
"""

from __future__ import annotations

import logging

from django.db import OperationalError, ProgrammingError, connection, transaction
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
    connection.ensure_connection()
    # The driver's low-level query(), which the session-state tracking does not see (cursors
    # only): the connection stays open for the server to time it out, which is what is tested.
    connection.connection.query("SET SESSION wait_timeout = 1")
    return JsonResponse({"connection_id": _connection_id()})


TEST_LOCK = "taskhub-test-lock"
TEST_TEMPORARY_TABLE = "taskhub_test_temporary"
# What a request may leave on its session beyond its transaction, each the way code does it.
SESSION_DIRT = {
    "get_lock": f"SELECT GET_LOCK('{TEST_LOCK}', 0)",
    "lock_tables": "LOCK TABLES queue_config READ",
    "user_variable": "SET @taskhub_test = 42",
    "user_variable_in_select": "SELECT @taskhub_test := 42",
    "sql_mode": "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'",
    "time_zone": "SET time_zone = '+05:00'",
    "temporary_table": f"CREATE TEMPORARY TABLE {TEST_TEMPORARY_TABLE} (id INT)",
}


def dirty_session(request: HttpRequest, kind: str, via: str) -> JsonResponse:
    """Leave session state behind, through a Django cursor or the raw DB-API connection.

    `raw-only`: the request runs no statement through Django at all (the connection is already
    open), so only the raw cursors' own count shows that it used the connection.
    """
    if via == "raw-only":
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            (connection_id,) = cursor.fetchone()
            cursor.execute(SESSION_DIRT[kind])
        return JsonResponse({"connection_id": connection_id})
    connection_id = _connection_id()
    cursor = connection.connection.cursor() if via == "raw" else connection.cursor()
    with cursor:
        cursor.execute(SESSION_DIRT[kind])
    return JsonResponse({"connection_id": connection_id})


def session_report(request: HttpRequest) -> JsonResponse:
    """Report the session state the request found: each kind of dirt, and whose connection it is."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CONNECTION_ID(), IS_USED_LOCK(%s) = CONNECTION_ID(), @taskhub_test, @@SESSION.sql_mode, "
            "@@SESSION.time_zone",
            [TEST_LOCK],
        )
        connection_id, holds_lock, variable, sql_mode, time_zone = cursor.fetchone()
        state = {"holds_lock": bool(holds_lock), "variable": variable, "sql_mode": sql_mode, "time_zone": time_zone}
        state["tables_locked"] = _fails(cursor, "SELECT COUNT(*) FROM auth_user") == 1100  # not locked: LOCK TABLES
        state["temporary_table"] = _fails(cursor, f"SELECT COUNT(*) FROM {TEST_TEMPORARY_TABLE}") is None
    return JsonResponse({"connection_id": connection_id, "state": state})


def _fails(cursor, sql: str) -> int | None:
    """Run `sql`; return the MySQL error code it failed with, or None."""
    try:
        cursor.execute(sql)
        cursor.fetchall()
    except OperationalError as exc:
        return exc.args[0]
    except ProgrammingError as exc:
        return exc.args[0]
    return None


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
    path("t/dirty/<str:kind>/<str:via>/", dirty_session),
    path("t/session/", session_report),
    path("", include("config.urls")),
]
handler404 = "core.errors.json_not_found"
handler500 = "core.errors.json_server_error"
