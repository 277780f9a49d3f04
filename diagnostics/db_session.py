"""Make sure a database connection is never handed on inside a transaction."""

from __future__ import annotations

import logging

from django.db import DatabaseError, connection

from diagnostics import metrics

logger = logging.getLogger("taskhub.db")

FORCED_ROLLBACK_MARKER = "❌ 数据库会话错误 [{context_id}]: ⚠️ 检测到未完成事务，强制回滚"


def ensure_clean_session(*, context_id: str) -> bool:
    """Roll back a transaction left open on the default connection; return True if one was.

    Call at the end of every request and every worker task. `context_id` is the request id
    (or the task's id) that goes into the log marker.
    """
    if connection.connection is None:
        return False
    if not _left_in_transaction():
        return False
    logger.error(FORCED_ROLLBACK_MARKER.format(context_id=context_id))
    metrics.DB_FORCED_ROLLBACKS.inc()
    try:
        connection.connection.rollback()
        _reset_django_transaction_state()
    except DatabaseError:
        # A connection that cannot even roll back is unusable: drop it so the next user reconnects.
        _reset_django_transaction_state()
        connection.close()
    return True


def _left_in_transaction() -> bool:
    """Django's own view of the connection (the server's view is checked by the middleware)."""
    return connection.in_atomic_block or not connection.get_autocommit()


def _reset_django_transaction_state() -> None:
    """Forget an atomic block that was entered and never exited, and restore autocommit."""
    connection.in_atomic_block = False
    connection.atomic_blocks = []
    connection.savepoint_ids = []
    connection.needs_rollback = False
    connection.commit_on_exit = True
    if not connection.get_autocommit():
        connection.set_autocommit(True)
