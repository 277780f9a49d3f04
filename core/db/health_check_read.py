"""The `health_check_read` shortcut: a request's first read answers Django's connection health check.

With `CONN_HEALTH_CHECKS` (settings), Django pings a reused connection before the first statement
of each request: a round trip whose only answer is "still alive?". The user lookup of an
authenticated request is the first statement of its request and a read that is safe to run twice,
so it can answer that question itself: it runs without the ping, and when its connection turns
out to be lost, the connection is closed and the read runs once more on a new one — what Django
does after a failed ping. A request whose connection was killed between two requests is answered
either way; only the round trip is saved.

It leans on Django's private health-check state of `BaseDatabaseWrapper` (`health_check_enabled`
and `health_check_done`, reset by `close_if_unusable_or_obsolete` at each request's start and read
by `close_if_health_check_failed` before each cursor). The plain version lets Django ping
(`accounts.selectors._plain_read`); the tests run both (accounts/tests/test_authentication_database.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, connection

from core.db.errors import is_connection_lost
from core.db.session import handle_database_error

T = TypeVar("T")


def read_checking_connection(read: Callable[[], T]) -> T:
    """Run `read`, a read-only first statement on the default connection, as its pending health check.

    Outside that case (no check due, or inside a transaction) it is a plain call.
    """
    if not _claim_health_check():
        return read()
    try:
        return read()
    except DatabaseError as exc:
        if not is_connection_lost(exc) or connection.in_atomic_block:
            raise
        handle_database_error(exc)  # logs the lost connection and closes it: the read reconnects
        return read()


def _claim_health_check() -> bool:
    """Mark the pending health check done, so Django skips its ping; False when none is due here."""
    due = connection.connection is not None and connection.health_check_enabled and not connection.health_check_done
    if not due or connection.in_atomic_block or not connection.get_autocommit():
        return False
    connection.health_check_done = True
    return True
