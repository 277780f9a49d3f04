"""The end-of-request transaction check asks the server only when a statement may have opened one (real MariaDB).

`core.db.session_state` notes the statements that can leave a transaction open behind Django's
back; without one, and with autocommit on, the session cannot hold one, and the check costs no
round trip. These tests run each such statement through a Django cursor and through the raw
DB-API connection's cursor and compare the check's answer with the server's own.
"""

from __future__ import annotations

import logging

import pytest
from django.db import DatabaseError, connection

from core.db.session import ensure_clean_session, server_in_transaction
from core.db.session_state import known_outside_transaction, may_open_transaction
from diagnostics.tests.conftest import answers_a_query
from tasks.models import QueueConfig

MARKER = "数据库会话错误"


def _server_view() -> tuple[bool, bool]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@in_transaction, @@autocommit")
        in_transaction, autocommit = cursor.fetchone()
    return bool(in_transaction), bool(autocommit)


def _run(sql: str, *, raw: bool) -> None:
    cursor = connection.connection.cursor() if raw else connection.cursor()
    try:
        cursor.execute(sql)
        while cursor.nextset():  # several statements in one string: read every result
            pass
    except DatabaseError:
        pass  # failed statements belong to the sequences below too
    except Exception as exc:  # the raw cursor raises mysqlclient's own errors
        if type(exc).__module__.split(".")[0] != "MySQLdb":
            raise
    finally:
        cursor.close()


# Each ends with the session still inside a transaction (or with autocommit off).
LEFT_OPEN = {
    "start transaction": ["START TRANSACTION", "SELECT COUNT(*) FROM queue_config"],
    "begin": ["BEGIN"],
    "begin work, lower case": ["begin work"],
    "read only": ["START TRANSACTION READ ONLY"],
    "with consistent snapshot": ["START TRANSACTION WITH CONSISTENT SNAPSHOT"],
    "autocommit off": ["SET autocommit=0", "SELECT COUNT(*) FROM queue_config"],
    "autocommit off, session scope": ["SET SESSION autocommit = OFF"],
    "commit and chain": ["START TRANSACTION", "COMMIT AND CHAIN"],
    "after another statement in one string": ["SELECT 1; START TRANSACTION"],
    "failed statement inside": ["START TRANSACTION", "SELECT * FROM no_such_table"],
}
# Each ends outside any transaction, with autocommit on.
CLEAN = {
    "committed": ["START TRANSACTION", "SELECT 1", "COMMIT"],
    "rolled back": ["BEGIN", "SELECT COUNT(*) FROM queue_config", "ROLLBACK"],
    "autocommit back on": ["SET autocommit=0", "COMMIT", "SET autocommit=1"],
    "implicit commit": ["START TRANSACTION", "CREATE TABLE IF NOT EXISTS check_t (a INT)", "DROP TABLE check_t"],
    "plain reads": ["SELECT COUNT(*) FROM queue_config", "SELECT 'begin transaction'"],
}


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("raw", [False, True], ids=["django cursor", "raw DB-API cursor"])
@pytest.mark.parametrize("steps", LEFT_OPEN.values(), ids=LEFT_OPEN.keys())
def test_a_transaction_left_open_is_found_and_rolled_back(steps, raw, caplog):
    QueueConfig.objects.count()
    for sql in steps:
        _run(sql, raw=raw)
    assert not known_outside_transaction(connection.connection)
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        assert ensure_clean_session(context_id="req-open") is True
    assert MARKER in caplog.text
    assert _server_view() == (False, True)


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("raw", [False, True], ids=["django cursor", "raw DB-API cursor"])
@pytest.mark.parametrize("steps", CLEAN.values(), ids=CLEAN.keys())
def test_a_clean_session_is_left_alone(steps, raw, caplog):
    QueueConfig.objects.count()
    for sql in steps:
        _run(sql, raw=raw)
    assert _server_view() == (False, True)
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        assert ensure_clean_session(context_id="req-clean") is False
    assert MARKER not in caplog.text


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_session_that_ran_only_ordinary_statements_is_checked_without_a_round_trip(django_assert_num_queries):
    QueueConfig.objects.count()
    assert not server_in_transaction(connection)  # the check of the set-up itself
    QueueConfig.objects.filter(name="no-such-queue").update(name="still-none")
    with django_assert_num_queries(0):
        assert ensure_clean_session(context_id="req-free") is False


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_new_connection_that_ran_only_ordinary_statements_is_checked_without_a_round_trip(
    django_assert_num_queries,
):
    connection.close()
    QueueConfig.objects.count()  # opens a new connection: Django's set-up, then the tracking's
    with django_assert_num_queries(0):
        assert ensure_clean_session(context_id="req-new") is False


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_after_a_statement_that_may_open_one_the_server_is_asked_once(django_assert_num_queries):
    QueueConfig.objects.count()
    _run("START TRANSACTION", raw=False)
    _run("COMMIT", raw=False)
    with django_assert_num_queries(1):
        assert ensure_clean_session(context_id="req-asked") is False
    with django_assert_num_queries(0):  # the server said clean: nothing to ask again
        assert ensure_clean_session(context_id="req-asked-again") is False


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_connection_closed_under_django_is_dropped_not_raised(caplog):
    """mysqlclient raises its own errors on a closed connection: the check must not let them out."""
    QueueConfig.objects.count()
    _run("START TRANSACTION", raw=True)
    connection.connection.close()
    assert not known_outside_transaction(connection.connection)

    with caplog.at_level(logging.WARNING, logger="taskhub.db"):
        assert ensure_clean_session(context_id="req-closed") is False

    assert connection.connection is None
    assert answers_a_query()  # the next user reconnects


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_connection_closed_after_ordinary_statements_is_not_taken_for_clean():
    """No statement that may open a transaction ran, so only the autocommit flag is read: on a closed
    connection mysqlclient raises its own error, which means "ask", never "clean"."""
    QueueConfig.objects.count()
    connection.connection.close()

    assert not known_outside_transaction(connection.connection)

    assert ensure_clean_session(context_id="req-closed-clean") is False
    assert answers_a_query()


def test_an_untracked_connection_is_never_taken_for_clean():
    assert not known_outside_transaction(object())


def test_an_untracked_connection_with_autocommit_on_is_not_taken_for_clean_either():
    class Untracked:
        def get_autocommit(self) -> bool:
            return True

    assert not known_outside_transaction(Untracked())


@pytest.mark.parametrize(
    "sql",
    [
        "START TRANSACTION",
        "start  transaction read write",
        "BEGIN",
        "begin work",
        "XA START 'x'",
        "XA BEGIN 'x'",
        "COMMIT AND CHAIN",
        "ROLLBACK WORK AND CHAIN",
        "CALL refresh_things()",
        "EXECUTE stmt",
        "SET autocommit=0",
        "SET @@session.autocommit = 0",
        "SELECT 1; START TRANSACTION",
        b"BEGIN",
    ],
)
def test_statements_that_may_open_a_transaction_are_noticed(sql):
    assert may_open_transaction(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM task_queue WHERE id = %s",
        "UPDATE task_queue SET status = 'running' WHERE id IN (1, 2)",
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET SESSION TRANSACTION READ WRITE",
        "INSERT INTO t (note) VALUES ('begin the transaction; call me')",
        "SELECT `begin_at` FROM t",
        "SELECT callback_url, executed_at FROM t",
    ],
)
def test_ordinary_statements_are_not(sql):
    assert not may_open_transaction(sql)
