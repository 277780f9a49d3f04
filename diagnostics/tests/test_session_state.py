"""Session state beyond the transaction never reaches the next request on a persistent connection.

A request that takes a named lock, locks tables, sets a user or session variable or creates a
temporary table, through a Django cursor or the raw DB-API connection, leaves it on the session;
the connection is closed at the end of that request (logged with the session marker), so the
next request starts clean. Through both entry points (WSGI and ASGI), on MariaDB.
"""

from __future__ import annotations

import logging
import timeit

import pytest
from django.db import connection

from core.db.session_state import session_change, session_changes
from diagnostics.tests.urls import SESSION_DIRT

pytestmark = [pytest.mark.urls("diagnostics.tests.urls"), pytest.mark.django_db(transaction=True)]

MARKER_PREFIX = "❌ 数据库会话错误 [{}]: ⚠️ 检测到会话状态残留，断开连接"


@pytest.mark.mysql
@pytest.mark.parametrize("via", ["django", "raw", "raw-only"])
@pytest.mark.parametrize("kind", list(SESSION_DIRT))
def test_session_state_left_by_a_request_never_reaches_the_next(wsgi, persistent_connection, caplog, kind, via):
    clean = wsgi.get("/t/session/").json()
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        dirty = wsgi.get(f"/t/dirty/{kind}/{via}/", headers={"X-Request-ID": f"dirty-{kind}"})
    assert dirty.status == 200, dirty.body

    after = wsgi.get("/t/session/").json()

    assert after["state"] == clean["state"], f"{kind} leaked into the next request"
    assert after["connection_id"] != dirty.json()["connection_id"], "the dirty connection was closed"
    assert MARKER_PREFIX.format(f"dirty-{kind}") in caplog.text


@pytest.mark.mysql
def test_the_dirt_really_stays_on_the_session_when_nothing_is_done(wsgi, persistent_connection, monkeypatch):
    """The checks of the test above see each kind of dirt: with the guard's drop disabled, every one leaks."""
    from core.db import session

    monkeypatch.setattr(session, "_drop_changed_session", lambda context_id: None)
    clean = wsgi.get("/t/session/").json()["state"]
    for kind in SESSION_DIRT:
        dirty = wsgi.get(f"/t/dirty/{kind}/django/")
        after = wsgi.get("/t/session/").json()
        assert after["connection_id"] == dirty.json()["connection_id"]
        assert after["state"] != clean, f"{kind} is not seen by the report"
        connection.close()  # the next kind starts on a clean session
        wsgi.get("/t/session/")


@pytest.mark.mysql
def test_a_clean_request_keeps_its_connection_and_logs_nothing(wsgi, persistent_connection, caplog):
    first = wsgi.get("/t/session/").json()["connection_id"]
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        assert wsgi.get("/t/commit/").status == 200
        for _ in range(3):
            assert wsgi.get("/t/one-query/").status == 200
    assert wsgi.get("/t/session/").json()["connection_id"] == first
    assert "数据库会话错误" not in caplog.text


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("SELECT GET_LOCK('x', 0)", "GET_LOCK"),
        ("lock tables t write", "LOCK TABLES"),
        ("SET @a = 1", "user variable"),
        ("SELECT @a := 1", "user variable"),
        ("SELECT 1 INTO @a", "user variable"),
        ("SET @@SESSION.sql_mode = ''", "session variable"),
        ("SELECT * FROM t WHERE id = @a", None),
        ("SET SESSION sql_mode = ''", "session variable"),
        ("SET time_zone = '+05:00'", "session variable"),
        ("set names latin1", "session variable"),
        ("CREATE TEMPORARY TABLE t (id INT)", "temporary table"),
        ("PREPARE s FROM 'SELECT 1'", "prepared statement"),
        ("USE other", "default schema"),
        ("SELECT 1", None),
        ("SELECT @@in_transaction, @@autocommit", None),
        ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", None),
        ("SET SESSION TRANSACTION READ WRITE", None),
        ("SET autocommit = 0", None),
        ("SET GLOBAL wait_timeout = 60", None),
        ("UPDATE task_queue SET status = %s WHERE id = %s", None),
        ("SELECT id FROM t WHERE status = 'running' FOR UPDATE SKIP LOCKED", None),
        ("INSERT INTO auth_user (email) VALUES ('alice@example.com')", None),
        ("INSERT INTO t (note) VALUES ('see @handle := 1')", None),
        ("SELECT IS_USED_LOCK('x'), RELEASE_LOCK('x')", None),
    ],
)
def test_what_counts_as_session_state(sql, what):
    assert session_change(sql) == what
    assert session_change(sql.encode()) == session_change(bytearray(sql.encode())) == what


@pytest.mark.mysql
def test_a_cursor_still_looks_at_its_statements_after_an_executemany():
    """Its batches are not looked at again while executemany runs; the statements after it are."""
    connection.ensure_connection()
    raw = connection.connection
    try:
        with raw.cursor() as cursor:
            cursor.executemany("SELECT %s", [(1,), (2,)])
            cursor.execute("SET @after_executemany = 1")
        assert session_changes(raw) == {"user variable"}
    finally:
        connection.close()


def test_looking_at_a_statement_costs_microseconds():
    """The cost per statement (docs/OPERATIONS.md): loose bound only, the figure is printed."""
    statement = (
        "SELECT id, owner_id, queue_id, status, attempts FROM task_queue FORCE INDEX (task_claim_idx) "
        "WHERE status = 'pending' AND queue_id = %s AND run_at <= %s ORDER BY priority DESC, run_at, id "
        "LIMIT %s FOR UPDATE SKIP LOCKED"
    )
    runs = 20_000
    seconds = min(timeit.repeat(lambda: session_change(statement), number=runs, repeat=3)) / runs
    print(f"session_change: {seconds * 1e6:.2f} µs per statement")
    assert seconds < 1e-3
