"""A connection left inside a transaction is rolled back and logged with the marker."""

from __future__ import annotations

import logging

import pytest
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connection,
    connections,
    transaction,
)
from prometheus_client import REGISTRY

from core.db import session
from core.db.session import ensure_clean_session, handle_database_error, server_in_transaction, under_test_transaction
from diagnostics.tests.conftest import answers_a_query
from tasks.models import QueueConfig

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _leave_no_atomic_block_behind():
    """A test that fails inside an abandoned block must not take the next tests' connection with it."""
    yield
    if connection.in_atomic_block and not under_test_transaction(connection):
        connection.close()
        connection.connect()


def _reconnects() -> float:
    return REGISTRY.get_sample_value("taskhub_db_reconnects_total") or 0.0


def test_a_clean_connection_is_left_alone(caplog):
    QueueConfig.objects.count()
    assert ensure_clean_session(context_id="req-1") is False
    assert "数据库会话错误" not in caplog.text


def test_a_closed_connection_is_not_opened_to_be_checked():
    connection.close()
    assert ensure_clean_session(context_id="req-0") is False
    assert connection.connection is None


def _connection_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()" if connection.vendor == "mysql" else "SELECT 1")
        return cursor.fetchone()[0] if connection.vendor == "mysql" else id(connection.connection)


@pytest.mark.parametrize("depth", [1, 3], ids=["one block", "nested blocks"])
def test_an_abandoned_atomic_block_is_rolled_back_and_logged(caplog, depth):
    before, reconnects = _connection_id(), _reconnects()
    for _ in range(depth):
        transaction.atomic().__enter__()
    QueueConfig.objects.create(name="never-committed")
    transaction.on_commit(lambda: pytest.fail("an abandoned block's on_commit ran"))
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        assert ensure_clean_session(context_id="req-42") is True
    assert "❌ 数据库会话错误 [req-42]: ⚠️ 检测到未完成事务，强制回滚" in caplog.text
    assert connection.get_autocommit()
    assert not connection.in_atomic_block
    assert not QueueConfig.objects.filter(name="never-committed").exists()
    # Closed (the server rolls back) and opened again.
    assert _reconnects() == reconnects + 1
    if connection.vendor == "mysql":
        assert _connection_id() != before
    with transaction.atomic():
        QueueConfig.objects.create(name="committed-afterwards")
    assert QueueConfig.objects.filter(name="committed-afterwards").exists()


class _GoneAway:
    """The raw connection of a server that went away: it can still be closed, nothing else."""

    def __init__(self, raw) -> None:
        self.raw = raw

    def rollback(self) -> None:
        raise connection.Database.OperationalError(2006, "MySQL server has gone away")

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


def _refuse_to_connect(*args, **kwargs):
    raise OperationalError(2003, "Can't connect to MySQL server")


def test_an_abandoned_atomic_block_on_a_database_that_went_away_is_dropped(monkeypatch):
    transaction.atomic().__enter__()
    QueueConfig.objects.count()
    connections["default"].connection = _GoneAway(connection.connection)
    monkeypatch.setattr(type(connections["default"]), "get_new_connection", _refuse_to_connect)

    assert ensure_clean_session(context_id="req-gone") is True

    assert connection.connection is None and not connection.in_atomic_block
    monkeypatch.undo()
    assert answers_a_query()  # the next user reconnects


def test_a_raw_transaction_on_a_database_that_went_away_is_dropped():
    """Outside any atomic block the rollback itself fails: the connection is dropped, not handed on."""
    with connection.cursor() as cursor:
        cursor.execute("BEGIN" if connection.vendor == "sqlite" else "START TRANSACTION")
    QueueConfig.objects.create(name="never-committed")
    before = _reconnects()
    connections["default"].connection = _GoneAway(connection.connection)

    assert ensure_clean_session(context_id="req-gone-raw") is True

    assert connection.connection is None
    assert _reconnects() == before + 1
    assert answers_a_query()  # the next user reconnects
    assert not QueueConfig.objects.filter(name="never-committed").exists()


def _transaction_state() -> dict[str, object]:
    """Every attribute of the wrapper that is neither the connection itself nor a setting or counter."""
    volatile = {"connection", "close_at", "queries_log", "savepoint_state", "health_check_done", "errors_occurred"}
    return {
        name: list(value) if isinstance(value, list) else value
        for name, value in vars(connections["default"]).items()
        if name not in volatile and isinstance(value, bool | list | type(None))
    }


def test_closing_alone_leaves_django_refusing_queries_until_the_block_exits():
    """Why the plain version reconnects: `close()` inside an atomic block waits for the block's exit."""
    transaction.atomic().__enter__()
    QueueConfig.objects.count()
    connection.close()
    with pytest.raises((DatabaseError, connection.Database.Error)):  # mysqlclient's own, on a closed handle
        QueueConfig.objects.count()
    connection.connect()  # what the plain version does next
    assert answers_a_query()


def test_leaving_abandoned_atomic_blocks_leaves_the_state_a_new_connection_has():
    """The reconnect leaves Django's wrapper outside every block, as a fresh connection is."""
    connection.close()
    connection.ensure_connection()
    fresh = _transaction_state()
    blocks = [transaction.atomic(), transaction.atomic(savepoint=False), transaction.atomic()]
    for block in blocks:
        block.__enter__()
    QueueConfig.objects.create(name="never-committed")
    transaction.on_commit(lambda: None)
    transaction.set_rollback(True)
    assert _transaction_state() != fresh

    assert ensure_clean_session(context_id="req-fresh") is True

    assert _transaction_state() == fresh
    assert not QueueConfig.objects.filter(name="never-committed").exists()


def test_a_raw_transaction_django_never_saw_is_found_on_the_server_and_rolled_back(caplog):
    with connection.cursor() as cursor:
        cursor.execute("BEGIN" if connection.vendor == "sqlite" else "START TRANSACTION")
    QueueConfig.objects.create(name="never-committed")
    assert connection.get_autocommit() and not connection.in_atomic_block  # Django sees nothing
    assert server_in_transaction(connection)

    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        assert ensure_clean_session(context_id="task-7") is True

    assert "❌ 数据库会话错误 [task-7]" in caplog.text
    assert not server_in_transaction(connection)
    assert not QueueConfig.objects.filter(name="never-committed").exists()


@pytest.mark.parametrize(
    "error",
    [OperationalError(2006, "MySQL server has gone away"), OperationalError(4031, "idle disconnect"), InterfaceError()],
)
def test_a_lost_connection_is_closed_so_the_next_user_reconnects(error):
    QueueConfig.objects.count()
    before = _reconnects()
    assert handle_database_error(error) is True
    assert connection.connection is None
    assert _reconnects() == before + 1
    assert answers_a_query()


def test_a_lost_connection_inside_an_atomic_block_is_left_to_the_block_s_exit():
    """Closing inside the block would make its rollback fail: Django's `__exit__` drops the connection itself."""
    before = _reconnects()
    with pytest.raises(RuntimeError), transaction.atomic():
        QueueConfig.objects.create(name="never-committed")
        assert handle_database_error(OperationalError(2013, "Lost connection to MySQL server")) is True
        assert _reconnects() == before
        assert not connection.closed_in_transaction
        raise RuntimeError("the request fails")
    assert not QueueConfig.objects.filter(name="never-committed").exists()
    assert answers_a_query()


def test_other_database_errors_keep_the_connection():
    QueueConfig.objects.count()
    assert handle_database_error(OperationalError(1205, "Lock wait timeout exceeded")) is False
    assert connection.connection is not None


@pytest.mark.django_db(transaction=False)
def test_inside_a_test_case_transaction_the_session_belongs_to_the_test():
    """Non-transactional tests wrap everything in an atomic block the middleware must not undo."""
    QueueConfig.objects.create(name="kept-by-the-test")
    assert ensure_clean_session(context_id="req-t") is False
    assert QueueConfig.objects.filter(name="kept-by-the-test").exists()


@pytest.mark.django_db(transaction=False)
def test_a_block_opened_inside_a_test_case_transaction_still_belongs_to_the_test():
    with transaction.atomic():
        QueueConfig.objects.create(name="kept-by-the-test")
        assert under_test_transaction(connection)
        assert ensure_clean_session(context_id="req-t2") is False
    assert QueueConfig.objects.filter(name="kept-by-the-test").exists()


class _RefusesToClose(_GoneAway):
    """A handle the driver has already torn down: closing it again raises."""

    def close(self) -> None:
        raise connection.Database.OperationalError(2006, "MySQL server has gone away")


def test_a_lost_connection_that_refuses_to_close_is_forgotten_all_the_same():
    QueueConfig.objects.count()
    raw = connection.connection
    connections["default"].connection = _RefusesToClose(raw)
    try:
        assert handle_database_error(OperationalError(2013, "Lost connection to MySQL server")) is True
        assert connection.connection is None
    finally:
        raw.close()
    assert answers_a_query()


def _open_raw_transaction() -> None:
    with connection.cursor() as cursor:
        cursor.execute("START TRANSACTION")
    QueueConfig.objects.create(name="never-committed")


def _ask_the_server_every_time(monkeypatch) -> None:
    """Ignore what the cursors saw: every check asks the server."""
    monkeypatch.setattr(session, "known_outside_transaction", lambda raw: False)


@pytest.mark.mysql
def test_the_mysql_8_probe_run_on_mariadb_finds_an_open_transaction_without_in_transaction(monkeypatch):
    connection.ensure_connection()  # opened as MariaDB: only the check below takes the MySQL 8 path
    monkeypatch.setattr(connection, "mysql_is_mariadb", False)
    _ask_the_server_every_time(monkeypatch)
    assert not server_in_transaction(connection)

    _open_raw_transaction()
    assert server_in_transaction(connection)  # at once: no cache to wait for
    connection.connection.rollback()
    assert not server_in_transaction(connection)

    with connection.cursor() as cursor:
        cursor.execute("SET autocommit = 0")
    assert server_in_transaction(connection)
    with connection.cursor() as cursor:
        cursor.execute("SET autocommit = 1")
    assert not server_in_transaction(connection)


@pytest.mark.mysql
def test_the_mysql_8_probe_run_on_mariadb_costs_one_statement(monkeypatch, django_assert_num_queries):
    connection.ensure_connection()
    monkeypatch.setattr(connection, "mysql_is_mariadb", False)
    _ask_the_server_every_time(monkeypatch)
    with django_assert_num_queries(1):
        assert not server_in_transaction(connection)


@pytest.mark.parametrize("statement", [True, False], ids=["after a statement", "before any statement"])
def test_autocommit_switched_off_through_django_is_rolled_back_and_switched_on_again(caplog, statement):
    """`transaction.set_autocommit(False)` left by a request: no atomic block, Django's flag is off.

    Before any statement SQLite's own connection is not yet in a transaction: only Django's flag tells.
    """
    transaction.set_autocommit(False)
    try:
        if statement:
            QueueConfig.objects.create(name="never-committed")
        with caplog.at_level(logging.ERROR, logger="taskhub.db"):
            assert ensure_clean_session(context_id="req-ac") is True

        assert "❌ 数据库会话错误 [req-ac]" in caplog.text
        assert connection.get_autocommit()
        assert not server_in_transaction(connection)
        assert not QueueConfig.objects.filter(name="never-committed").exists()
    finally:
        if connection.connection is not None and not connection.get_autocommit():
            connection.rollback()
            connection.set_autocommit(True)


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (OperationalError(1205, "Lock wait timeout exceeded"), "could not read the session's transaction state"),
        (OperationalError(2013, "Lost connection to MySQL server during query"), "数据库连接已断开"),
        (ProgrammingError(1227, "Access denied"), "could not read the session's transaction state"),
    ],
    ids=["other error", "connection lost", "not a connection error"],
)
def test_a_session_whose_transaction_state_cannot_be_read_is_dropped(monkeypatch, caplog, error, logged):
    QueueConfig.objects.count()
    before = _reconnects()

    def unreadable(conn):
        raise error

    monkeypatch.setattr("core.db.session.server_in_transaction", unreadable)
    with caplog.at_level(logging.WARNING, logger="taskhub.db"):
        assert ensure_clean_session(context_id="req-unreadable") is False

    assert logged in caplog.text
    assert connection.connection is None
    assert _reconnects() == before + 1
    monkeypatch.undo()
    assert answers_a_query()


@pytest.mark.mysql
@pytest.mark.parametrize(
    "error",
    [OperationalError(1053, "Server shutdown in progress"), OperationalError(2013, "Lost connection to MySQL server")],
    ids=["1053", "2013"],
)
def test_the_mysql_8_probe_run_on_mariadb_raises_any_error_but_the_one_inside_a_transaction(monkeypatch, error):
    """Only 1568 means "inside a transaction"; any other error (below it or above) is left to the caller."""
    connection.ensure_connection()
    monkeypatch.setattr(connection, "mysql_is_mariadb", False)
    _ask_the_server_every_time(monkeypatch)

    def fail_the_probe(execute, sql, params, many, context):
        if sql.startswith("SET TRANSACTION"):
            raise error
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_the_probe), pytest.raises(OperationalError) as raised:
        server_in_transaction(connection)

    assert raised.value is error


@pytest.mark.mysql
def test_the_mysql_8_probe_run_on_mariadb_works_without_an_isolation_level_configured(monkeypatch):
    connection.ensure_connection()
    monkeypatch.setattr(connection, "mysql_is_mariadb", False)
    monkeypatch.setattr(connection, "isolation_level", None)
    _ask_the_server_every_time(monkeypatch)
    assert not server_in_transaction(connection)

    _open_raw_transaction()
    assert server_in_transaction(connection)
    connection.connection.rollback()
    assert not server_in_transaction(connection)
