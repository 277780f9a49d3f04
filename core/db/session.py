"""Make sure a database connection is never handed on inside a transaction, nor dead.

Two views of "inside a transaction" are checked, because Django only knows about the
transactions it opened itself: a raw `START TRANSACTION` (or `SET autocommit=0`) leaves
Django's state clean while the server holds the transaction open. The server's view costs
nothing when the status flags of the server's last reply say the session is clean (read from the
client library, `core.db.reply_flags`), one cheap query on MySQL/MariaDB otherwise, and
none on SQLite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, OperationalError, connection
from django.db.backends.base.base import BaseDatabaseWrapper

from core import metrics
from core.db import reply_flags
from core.db.errors import error_code, is_connection_lost, is_database_unavailable

logger = logging.getLogger("taskhub.db")
T = TypeVar("T")

FORCED_ROLLBACK_MARKER = "❌ 数据库会话错误 [{context_id}]: ⚠️ 检测到未完成事务，强制回滚"
CONNECTION_LOST_MARKER = "⚠️ 数据库连接已断开，关闭连接以便重连: {error}"

MARIADB_TRX_QUERY = "SELECT @@in_transaction, @@autocommit"
# MySQL 8 has no @@in_transaction, and information_schema.INNODB_TRX is served from a cache
# refreshed at most every 100 ms, so it misses a transaction opened just before the check.
# `SET TRANSACTION ...` (for the next transaction only) is refused with 1568 inside one: an
# exact answer, no privilege needed, and harmless otherwise since it repeats the session level.
CANT_CHANGE_TX_CHARACTERISTICS = 1568


def ensure_clean_session(*, context_id: str) -> bool:
    """Roll back a transaction left open on the default connection; return True if one was.

    Call at the end of every request and every worker task. `context_id` is the request id
    (or the task's id) that goes into the log marker. Never opens a connection.
    """
    if connection.connection is None or under_test_transaction(connection):
        return False
    try:
        if not (_django_left_transaction_open() or server_in_transaction(connection)):
            return False
    except DatabaseError as exc:
        # A session whose state cannot be read is not handed on: drop it.
        if not handle_database_error(exc):
            logger.warning("could not read the session's transaction state, closing it: %s", exc)
            _drop_connection()
        return False
    logger.error(FORCED_ROLLBACK_MARKER.format(context_id=context_id))
    metrics.DB_FORCED_ROLLBACKS.inc()
    _force_rollback()
    return True


def handle_database_error(exc: BaseException) -> bool:
    """Count a database error and close the connection when it is lost; return True if it was.

    Closing lets the next request (or task) reconnect instead of failing on a dead socket.
    """
    if not is_database_unavailable(exc):
        return False
    metrics.DB_ERRORS.labels(kind=type(exc).__name__).inc()
    if not is_connection_lost(exc):
        return False
    logger.warning(CONNECTION_LOST_MARKER.format(error=exc))
    # Inside an atomic block Django's own __exit__ drops the connection; closing here would
    # make the block's rollback fail with "connection already closed".
    if connection.connection is not None and not connection.in_atomic_block:
        _drop_connection()
    return True


def read_checking_connection(read: Callable[[], T]) -> T:
    """Run `read`, a read-only statement, as the default connection's pending health check.

    With `CONN_HEALTH_CHECKS`, Django pings a reused connection before its first statement in each
    request: a round trip that only answers "still alive?". A read that is safe to repeat can
    answer that itself: it runs without the ping, and if the connection turns out to be lost it
    is closed and the read runs once more on a new connection — what Django does after a failed
    ping. Outside that case (no check due, or inside a transaction) it is a plain call.
    """
    if not _claim_health_check():
        return read()
    try:
        return read()
    except DatabaseError as exc:
        if not handle_database_error(exc) or connection.connection is not None:
            raise
        return read()


def _claim_health_check() -> bool:
    due = connection.connection is not None and connection.health_check_enabled and not connection.health_check_done
    if not due or connection.in_atomic_block or not connection.get_autocommit():
        return False
    connection.health_check_done = True
    return True


def under_test_transaction(conn: BaseDatabaseWrapper) -> bool:
    """Return True when the connection runs inside a test case's wrapping transaction.

    Django's TestCase (and pytest-django's non-transactional tests) keep every test inside an
    atomic block flagged `_from_testcase`; that transaction belongs to the test, not to the
    request, and must not be rolled back by the middleware.
    """
    return bool(conn.atomic_blocks) and getattr(conn.atomic_blocks[0], "_from_testcase", False)


def server_in_transaction(conn: BaseDatabaseWrapper) -> bool:
    """Return True when the server says the session is inside a transaction (or autocommit is off)."""
    if conn.vendor == "sqlite":
        return conn.connection.in_transaction
    if conn.vendor != "mysql":
        return False
    if reply_flags.is_clean(conn.connection):
        return False
    return _server_says_in_transaction(conn)


def _server_says_in_transaction(conn: BaseDatabaseWrapper) -> bool:
    """Ask the server itself (a round trip): the answer when the reply flags are unreadable or not clean."""
    with conn.cursor() as cursor:
        if conn.mysql_is_mariadb:
            cursor.execute(MARIADB_TRX_QUERY)
            in_transaction, autocommit = cursor.fetchone()
            return bool(in_transaction) or not autocommit
        try:
            cursor.execute(_mysql_probe(conn))
        except OperationalError as exc:
            if error_code(exc) != CANT_CHANGE_TX_CHARACTERISTICS:
                raise
            return True
    # mysqlclient reads autocommit from the status flags of the probe's reply: no round trip.
    return not conn.connection.get_autocommit()


def _mysql_probe(conn: BaseDatabaseWrapper) -> str:
    level = getattr(conn, "isolation_level", None)
    return f"SET TRANSACTION ISOLATION LEVEL {level.upper()}" if level else "SET TRANSACTION READ WRITE"


def _django_left_transaction_open() -> bool:
    return connection.in_atomic_block or not connection.get_autocommit()


def _force_rollback() -> None:
    """Roll back on the server, restore autocommit and forget abandoned atomic blocks."""
    raw = connection.connection
    try:
        with connection.wrap_database_errors:
            raw.rollback()
        _reset_django_transaction_state()
        if not connection.get_autocommit():
            connection.set_autocommit(True)
        elif connection.vendor == "mysql" and not raw.get_autocommit():
            # A raw `SET autocommit=0` that Django never saw; mysqlclient reads the flag for free.
            with connection.wrap_database_errors:
                raw.autocommit(True)
    except DatabaseError as exc:
        # A connection that cannot even roll back is unusable: drop it so the next user reconnects.
        metrics.DB_ERRORS.labels(kind=type(exc).__name__).inc()
        _reset_django_transaction_state()
        _drop_connection()


def _drop_connection() -> None:
    try:
        connection.close()
    except DatabaseError:
        pass  # a handle already closed under Django refuses to close again; Django forgets it either way
    metrics.DB_RECONNECTS.inc()


def _reset_django_transaction_state() -> None:
    """Forget an atomic block that was entered and never exited."""
    connection.in_atomic_block = False
    connection.atomic_blocks = []
    connection.savepoint_ids = []
    connection.needs_rollback = False
    connection.commit_on_exit = True
    connection.closed_in_transaction = False
    connection.run_on_commit = []
