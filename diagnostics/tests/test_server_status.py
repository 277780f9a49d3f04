"""The reply's status flags, read from the client library, agree with the server (real MariaDB)."""

from __future__ import annotations

import logging

import pytest
from django.db import DatabaseError, connection

from core.db import reply_flags
from core.db.session import ensure_clean_session, server_in_transaction
from core.tests.both_ways import both_ways
from diagnostics.tests.conftest import answers_a_query
from tasks.models import QueueConfig

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True)]

# The session check both ways: trusting clean reply flags (the shortcut) or always asking the server.
reply_flags_on = both_ways("reply_flags")


def _server_view() -> tuple[bool, bool]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@in_transaction, @@autocommit")
        in_transaction, autocommit = cursor.fetchone()
    return bool(in_transaction), bool(autocommit)


def _run(sql: str) -> None:
    with connection.cursor() as cursor:
        try:
            cursor.execute(sql)
        except DatabaseError:
            pass  # failed statements belong to the sequences below too


# Each step is run, then the flags are read before anything else touches the connection.
SEQUENCES = {
    "explicit transaction": ["START TRANSACTION", "SELECT 1", "COMMIT", "SELECT 1"],
    "rolled back": ["BEGIN", "SELECT COUNT(*) FROM queue_config", "ROLLBACK"],
    "autocommit off": ["SET autocommit=0", "SELECT COUNT(*) FROM queue_config", "COMMIT", "SET autocommit=1"],
    "failed statement inside": ["START TRANSACTION", "SELECT * FROM no_such_table", "SELECT 1", "ROLLBACK"],
    "implicit commit": ["START TRANSACTION", "SELECT COUNT(*) FROM queue_config", "CREATE TEMPORARY TABLE t (a INT)"],
    "read only": ["START TRANSACTION READ ONLY", "SELECT COUNT(*) FROM queue_config", "COMMIT"],
}


@pytest.mark.parametrize("steps", SEQUENCES.values(), ids=SEQUENCES.keys())
def test_the_flags_match_the_servers_own_answer_after_every_statement(steps):
    connection.ensure_connection()
    raw = connection.connection
    for sql in steps:
        _run(sql)
        flags = reply_flags.status_flags(raw)
        assert flags is not None, "the MariaDB client library's flags should be readable here"
        read = (
            bool(flags & reply_flags.SERVER_STATUS_IN_TRANS),
            bool(flags & reply_flags.SERVER_STATUS_AUTOCOMMIT),
        )
        assert read == _server_view(), f"after {sql!r}"
    raw.rollback()
    raw.autocommit(True)


def test_a_clean_session_is_checked_without_a_statement_with_the_flags_and_with_one_without(
    django_assert_num_queries, reply_flags_on
):
    QueueConfig.objects.count()
    with django_assert_num_queries(0 if reply_flags_on else 1):
        assert ensure_clean_session(context_id="req-free") is False


@pytest.mark.parametrize("sql", ["START TRANSACTION", "SET autocommit = 0"])
def test_an_open_transaction_is_found_either_way(reply_flags_on, sql):
    QueueConfig.objects.count()
    with connection.cursor() as cursor:
        cursor.execute(sql)
    assert server_in_transaction(connection)
    assert ensure_clean_session(context_id="req-open") is True
    assert not server_in_transaction(connection)


def test_flags_saying_in_transaction_are_confirmed_on_the_server_before_any_rollback(
    monkeypatch, caplog, reply_flags_on
):
    """An error reply carries no flags: stale ones must not raise a false alarm."""
    QueueConfig.objects.count()
    stale = reply_flags.SERVER_STATUS_IN_TRANS | reply_flags.SERVER_STATUS_AUTOCOMMIT
    monkeypatch.setattr(reply_flags, "status_flags", lambda raw: stale)
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        assert ensure_clean_session(context_id="req-stale") is False
    assert "数据库会话错误" not in caplog.text


def test_without_the_client_librarys_function_the_server_is_asked(monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(reply_flags, "_reader", lambda: None)
    QueueConfig.objects.count()
    assert reply_flags.status_flags(connection.connection) is None
    with django_assert_num_queries(1):
        assert not server_in_transaction(connection)
    _run("START TRANSACTION")
    assert server_in_transaction(connection)
    connection.connection.rollback()


def test_flags_from_a_struct_mysqlclient_does_not_use_are_not_trusted(monkeypatch):
    """The autocommit bit is cross-checked with mysqlclient's own reading of the same struct."""
    QueueConfig.objects.count()
    assert connection.connection.get_autocommit()
    monkeypatch.setattr(reply_flags, "_reader", lambda: lambda capsule: 0)  # "autocommit off"
    assert reply_flags.status_flags(connection.connection) is None
    assert not reply_flags.is_clean(connection.connection)


def test_a_connection_closed_under_django_is_dropped_not_raised(caplog):
    """mysqlclient raises its own errors on a closed connection: the check must not let them out."""
    QueueConfig.objects.count()
    connection.connection.close()
    assert reply_flags.status_flags(connection.connection) is None

    with caplog.at_level(logging.WARNING, logger="taskhub.db"):
        assert ensure_clean_session(context_id="req-closed") is False

    assert connection.connection is None
    assert answers_a_query()  # the next user reconnects


def test_a_connection_of_another_driver_has_no_flags():
    assert reply_flags.status_flags(object()) is None
