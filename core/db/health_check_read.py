"""The `health_check_read` shortcut: the first read of a request doubles as the connection's health check.

With `CONN_HEALTH_CHECKS`, Django pings a reused connection before its first statement in each
request: a round trip that only answers "still alive?". A read that is safe to repeat can answer
that itself: it runs without the ping, and if the connection turns out to be lost it is closed and
the read runs once more on a new connection — what Django does after a failed ping.

It marks the check done by setting `health_check_done`, an attribute Django keeps for itself
(`BaseDatabaseWrapper.close_if_health_check_failed`); the plain version
(`core.db.session.read_checking_connection`) just runs the read and lets Django ping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, connection

from core.db.session import handle_database_error

T = TypeVar("T")


def read_as_health_check(read: Callable[[], T]) -> T:
    """Run `read` as the default connection's pending health check (a plain call when none is due)."""
    if not _claim_health_check():
        return read()
    try:
        return read()
    except DatabaseError as exc:
        if not handle_database_error(exc) or connection.connection is not None:
            raise
        return read()


def _claim_health_check() -> bool:
    """Take over the ping Django would send before the next statement; False when none is due (or unsafe)."""
    due = connection.connection is not None and connection.health_check_enabled and not connection.health_check_done
    if not due or connection.in_atomic_block or not connection.get_autocommit():
        return False
    connection.health_check_done = True
    return True
