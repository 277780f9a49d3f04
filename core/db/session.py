"""Make sure a database connection is never handed on inside a transaction, nor dead.

Two views of "inside a transaction" are checked, because Django only knows about the
transactions it opened itself: a raw `START TRANSACTION` (or `SET autocommit=0`) leaves
Django's state clean while the server holds the transaction open. The server's view costs one
cheap query on MySQL/MariaDB, asked only when the session's cursors ran a statement that may
have opened one (`core.db.session_state`) or autocommit is off; none on SQLite.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, OperationalError, connection
from django.db.backends.base.base import BaseDatabaseWrapper

from core import metrics
from core.db.errors import error_code, is_connection_lost, is_database_unavailable
from core.db.session_state import forget_transaction_statements, known_outside_transaction, session_changes

logger = logging.getLogger("taskhub.db")

FORCED_ROLLBACK_MARKER = "❌ 数据库会话错误 [{context_id}]: ⚠️ 检测到未完成事务，强制回滚"
# The same prefix as the rollback marker, so the alerts on it see this too.
SESSION_STATE_MARKER = "❌ 数据库会话错误 [{context_id}]: ⚠️ 检测到会话状态残留，断开连接 ({what})"
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
    (or the task's id) that goes into the log marker. Never opens a connection just to check it.
    A MySQL connection whose statements left session state behind (`core.db.session_state`:
    locks, user or session variables, temporary tables) is closed too, which clears all of it.
    """
    if connection.connection is None or under_test_transaction(connection):
        return False
    rolled_back = _roll_back_left_open(context_id)
    _drop_changed_session(context_id)
    return rolled_back


def _drop_changed_session(context_id: str) -> None:
    if connection.vendor != "mysql" or connection.connection is None:
        return
    changes = session_changes(connection.connection)
    if not changes:
        return
    logger.error(SESSION_STATE_MARKER.format(context_id=context_id, what=", ".join(sorted(changes))))
    metrics.DB_SESSION_STATE_DROPS.inc()
    _close_quietly()


def _roll_back_left_open(context_id: str) -> bool:
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
    if known_outside_transaction(conn.connection):
        return False
    in_transaction = _server_says_in_transaction(conn)
    if not in_transaction:
        forget_transaction_statements(conn.connection)
    return in_transaction


def _server_says_in_transaction(conn: BaseDatabaseWrapper) -> bool:
    """Ask the server itself: one round trip."""
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
    """Roll back on the server and restore autocommit; drop a connection that cannot."""
    try:
        if connection.in_atomic_block:
            _reconnect()
        else:
            _rollback_outside_atomic_blocks()
    except DatabaseError as exc:
        # A connection that cannot even roll back is unusable: drop it so the next user reconnects.
        metrics.DB_ERRORS.labels(kind=type(exc).__name__).inc()
        _drop_connection()


def _rollback_outside_atomic_blocks() -> None:
    raw = connection.connection
    with connection.wrap_database_errors:
        raw.rollback()
    if not connection.get_autocommit():
        connection.set_autocommit(True)
    elif connection.vendor == "mysql" and not raw.get_autocommit():
        # A raw `SET autocommit=0` that Django never saw; mysqlclient reads the flag for free.
        with connection.wrap_database_errors:
            raw.autocommit(True)
    forget_transaction_statements(raw)


def _reconnect() -> None:
    """Close the connection (the server rolls its transaction back) and open a new one.

    `close()` alone is not enough inside an atomic block: Django then refuses every query until
    the block exits, which an abandoned block never does. `connect()` resets that state, as it
    does for any connection closed inside an atomic block.
    """
    _drop_connection()
    try:
        with connection.wrap_database_errors:
            connection.connect()
    except DatabaseError as exc:
        # The server is away: leave the connection closed; the next user connects (or answers 503).
        metrics.DB_ERRORS.labels(kind=type(exc).__name__).inc()
        _close_quietly()


def _drop_connection() -> None:
    _close_quietly()
    metrics.DB_RECONNECTS.inc()


def _close_quietly() -> None:
    try:
        connection.close()
    except DatabaseError:
        pass  # a handle already closed under Django refuses to close again; Django forgets it either way
