"""Classify database exceptions (which mean "the database is unavailable right now") and describe them safely."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError

logger = logging.getLogger("taskhub.db")
T = TypeVar("T")

# MySQL/MariaDB client and server codes that mean the connection itself is gone or unusable:
# 2002/2003 can't connect, 2006 server has gone away, 2013 lost connection during query,
# 2014 commands out of sync, 2026 SSL error, 2055 lost connection (system error),
# 4031 idle disconnect (MySQL 8.0.24+), 1053 server shutdown in progress,
# 1158-1161 network read/write errors, 1927 connection killed (MariaDB),
# 1317 query interrupted (KILL QUERY; the session may be mid-statement, so start afresh).
CONNECTION_LOST_CODES = frozenset(
    {1053, 1158, 1159, 1160, 1161, 1317, 1927, 2002, 2003, 2006, 2013, 2014, 2026, 2055, 4031}
)
# Transient contention: retrying the same work is correct.
DEADLOCK = 1213
LOCK_WAIT_TIMEOUT = 1205
CONTENTION_ATTEMPTS = 5


def error_code(exc: BaseException) -> int | None:
    """Return the vendor error number of a database exception, if it carries one."""
    for candidate in (exc, exc.__cause__):
        args = getattr(candidate, "args", ())
        if args and isinstance(args[0], int):
            return args[0]
    return None


def is_connection_lost(exc: BaseException) -> bool:
    """Return True when the connection must be closed and opened again."""
    if isinstance(exc, InterfaceError):
        return True
    return isinstance(exc, OperationalError) and error_code(exc) in CONNECTION_LOST_CODES


def is_database_unavailable(exc: BaseException) -> bool:
    """Return True when a request failed because the database is down, gone or overloaded."""
    return isinstance(exc, (OperationalError, InterfaceError))


def is_retryable_contention(exc: BaseException) -> bool:
    """Return True for deadlocks and lock-wait timeouts, which are safe to retry."""
    return isinstance(exc, DatabaseError) and error_code(exc) in (DEADLOCK, LOCK_WAIT_TIMEOUT)


def with_contention_retry(work: Callable[[], T], *, what: str) -> T:
    """Run the transaction `work`, again after a deadlock or lock-wait timeout (with a short random pause)."""
    for attempt in range(1, CONTENTION_ATTEMPTS + 1):
        try:
            return work()
        except Exception as exc:
            if not is_retryable_contention(exc) or attempt == CONTENTION_ATTEMPTS:
                raise
            logger.info("%s hit lock contention (%s); retrying (%d/%d)", what, exc, attempt, CONTENTION_ATTEMPTS)
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("unreachable")


def describe_database_error(exc: BaseException) -> str:
    """Return the server's message and error number, which never contain the password."""
    code = error_code(exc)
    args = getattr(exc, "args", ())
    text = str(args[1]) if len(args) > 1 and isinstance(args[0], int) else str(exc)
    return f"{text} (error {code})" if code else f"{type(exc).__name__}: {text}"
