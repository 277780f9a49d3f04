"""The connection middleware: request ids, a clean session after every request, 503 on DB loss."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.test import override_settings
from prometheus_client import REGISTRY

from core.request_context import RequestIdLogFilter, get_request_id
from diagnostics.tests.conftest import WsgiDriver
from diagnostics.tests.urls import COMMITTED_QUEUE, LEAKED_QUEUE

MARKER = "❌ 数据库会话错误 [{}]: ⚠️ 检测到未完成事务，强制回滚"

pytestmark = [pytest.mark.urls("diagnostics.tests.urls"), pytest.mark.django_db(transaction=True)]


def _counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class _Collect(logging.Handler):
    """Capture records after the request-id filter ran, as the console handler sees them."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.addFilter(RequestIdLogFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_records():
    handler = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_it_returns_a_sane_incoming_request_id(wsgi):
    response = wsgi.get("/t/no-query/", headers={"X-Request-ID": "client-id.42"})
    assert response.headers["X-Request-ID"] == "client-id.42"


@pytest.mark.parametrize("incoming", ["", "has spaces", "x" * 129, "semi;colon", "新"])
def test_it_replaces_a_missing_or_insane_request_id(wsgi, incoming):
    response = wsgi.get("/t/no-query/", headers={"X-Request-ID": incoming} if incoming else {})
    request_id = response.headers["X-Request-ID"]
    assert request_id != incoming
    assert len(request_id) == 32 and int(request_id, 16) >= 0


def test_every_log_line_of_the_request_carries_its_id_even_djangos_not_found(wsgi, log_records):
    wsgi.get("/t/log/", headers={"X-Request-ID": "rid-view"})
    wsgi.get("/t/does-not-exist/", headers={"X-Request-ID": "rid-404"})

    view_line = next(r for r in log_records if r.getMessage() == "inside the view")
    not_found = next(r for r in log_records if r.name == "django.request" and "Not Found" in r.getMessage())
    assert view_line.request_id == "rid-view"
    assert not_found.request_id == "rid-404"
    assert get_request_id() == "-"  # forgotten once the response was closed


def _assert_leak_is_rolled_back(wsgi, second_connection, caplog, view: str) -> None:
    rollbacks = _counter("taskhub_db_forced_rollbacks_total")
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        leaked = wsgi.get(view, headers={"X-Request-ID": "leak-1"})
    assert leaked.status == 200
    assert MARKER.format("leak-1") in caplog.text
    assert _counter("taskhub_db_forced_rollbacks_total") == rollbacks + 1

    following = wsgi.get("/t/state/").json()
    # The same persistent connection, except that a connection left inside atomic blocks is
    # closed and opened again.
    kept = view != "/t/abandon-atomic/"
    assert (following["connection_id"] == leaked.json()["connection_id"]) is kept
    assert following["in_transaction"] is False

    # A leftover transaction would be committed by the next request's atomic block.
    assert wsgi.get("/t/commit/").status == 200
    count = "SELECT COUNT(*) FROM queue_config WHERE name = %s"
    assert second_connection.scalar(count, (COMMITTED_QUEUE,)) == 1
    assert second_connection.scalar(count, (LEAKED_QUEUE,)) == 0


@pytest.mark.parametrize("view", ["/t/leave-open/", "/t/abandon-atomic/"])
def test_a_transaction_left_open_is_rolled_back_and_never_reaches_the_next_request(
    wsgi, persistent_connection, second_connection, caplog, view
):
    _assert_leak_is_rolled_back(wsgi, second_connection, caplog, view)


@pytest.mark.mysql
def test_the_mysql_8_probe_run_on_mariadb_rolls_back_a_raw_transaction_left_open_too(
    wsgi, persistent_connection, second_connection, caplog, monkeypatch
):
    wsgi.get("/t/state/")  # connect as MariaDB first; from here on the check takes the MySQL 8 path
    monkeypatch.setattr(connection, "mysql_is_mariadb", False)
    _assert_leak_is_rolled_back(wsgi, second_connection, caplog, "/t/leave-open/")


@pytest.mark.mysql
def test_a_session_left_with_autocommit_off_is_restored(wsgi, persistent_connection, second_connection, caplog):
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        wsgi.get("/t/autocommit-off/", headers={"X-Request-ID": "ac-off"})
    assert MARKER.format("ac-off") in caplog.text
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@autocommit")
        assert cursor.fetchone()[0] == 1
    assert second_connection.scalar("SELECT COUNT(*) FROM queue_config WHERE name = %s", (LEAKED_QUEUE,)) == 0


def test_a_streaming_response_is_checked_once_its_body_is_sent(wsgi, persistent_connection, second_connection, caplog):
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        response = wsgi.get("/t/stream-open/", headers={"X-Request-ID": "stream-1"})
    assert response.body == b"first,second"
    assert MARKER.format("stream-1") in caplog.text
    assert wsgi.get("/t/state/").json()["in_transaction"] is False
    assert second_connection.scalar("SELECT COUNT(*) FROM queue_config WHERE name = %s", (LEAKED_QUEUE,)) == 0


def test_a_streaming_response_closed_unread_still_ends_the_request(wsgi, persistent_connection):
    wsgi.get("/t/one-query/")
    before = _counter("taskhub_http_requests_total", method="GET", route="/t/stream-open/", status="200")
    wsgi.get("/t/stream-open/", consume=False)
    assert connection.execute_wrappers == []
    assert _counter("taskhub_http_requests_total", method="GET", route="/t/stream-open/", status="200") == before + 1


def test_a_clean_request_logs_nothing_and_costs_only_its_own_query(
    wsgi, persistent_connection, caplog, django_assert_num_queries
):
    wsgi.get("/t/one-query/")  # opens the connection (and verifies its session) beforehand
    # The view's query and nothing else: SQLite's driver knows its transaction state, and on MySQL
    # the check asks the server only after a statement that may have opened a transaction.
    with django_assert_num_queries(1):
        assert wsgi.get("/t/one-query/").status == 200
    assert "数据库会话错误" not in caplog.text


def test_a_request_that_never_touched_the_database_makes_no_query(
    wsgi, persistent_connection, django_assert_num_queries
):
    wsgi.get("/t/one-query/")
    with django_assert_num_queries(0):
        assert wsgi.get("/t/no-query/").status == 200


def test_a_request_never_opens_a_connection_just_to_check_it(wsgi, persistent_connection):
    connection.close()
    assert wsgi.get("/t/no-query/").status == 200
    assert connection.connection is None


# An API read that lost its connection is run once more on a new one (core/errors.py): that one
# is lost too here, so it reconnects twice.
@pytest.mark.parametrize(("view", "lost"), [("/t/gone-away/", 1), ("/t/drf-gone-away/", 2)])
def test_a_lost_connection_answers_503_and_is_closed_for_the_next_request(wsgi, persistent_connection, view, lost):
    reconnects = _counter("taskhub_db_reconnects_total")
    response = wsgi.get(view)
    assert response.status == 503
    assert response.json() == {
        "detail": "The database is temporarily unavailable; retry shortly.",
        "code": "database_unavailable",
    }
    assert response.headers["Retry-After"] == "5"
    assert connection.connection is None
    assert _counter("taskhub_db_reconnects_total") == reconnects + lost
    assert wsgi.get("/t/one-query/").status == 200


@override_settings(
    MIDDLEWARE=[
        "core.db.middleware.DatabaseSessionMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "diagnostics.tests.urls.FailingMiddleware",
    ]
)
def test_a_database_error_raised_in_another_middleware_answers_503_not_500():
    response = WsgiDriver().get("/t/middleware-fails/")  # built here: loads the overridden MIDDLEWARE
    assert response.status == 503
    assert response.json()["code"] == "database_unavailable"
    assert "Retry-After" in response.headers


def test_requests_are_counted_by_route_pattern_not_raw_path(wsgi):
    wsgi.get("/t/no-query/")
    wsgi.get("/nothing/here/123")
    assert _counter("taskhub_http_requests_total", method="GET", route="/t/no-query/", status="200") >= 1
    assert _counter("taskhub_http_requests_total", method="GET", route="<unmatched>", status="404") >= 1
    assert _counter("taskhub_http_request_duration_seconds_count", method="GET", route="/t/no-query/") >= 1
