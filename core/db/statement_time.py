"""A time bound on the reads of one block of code: a page that would scan a big table stops, it does not hang.

MariaDB bounds every statement of the session with `max_statement_time` (seconds), MySQL 8 every
SELECT with `max_execution_time` (milliseconds). The bound is set for the block and the session's
own value put back afterwards, so the connection goes back to the next request as it came. Other
databases (SQLite) run the block unbounded.

A statement stopped by the bound raises the vendor's error (MariaDB 1969, MySQL 3024), which
`is_statement_timeout` recognises; the caller says what to narrow.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connection

from core.db.errors import error_code

STATEMENT_TIMEOUT_CODES = frozenset({1969, 3024})  # MariaDB max_statement_time, MySQL max_execution_time


def is_statement_timeout(exc: BaseException) -> bool:
    """Return True when `exc` is a statement stopped by its time bound."""
    return isinstance(exc, DatabaseError) and error_code(exc) in STATEMENT_TIMEOUT_CODES


@contextmanager
def bounded_statement_time(seconds: float) -> Iterator[None]:
    """Stop any read of this block that runs longer than `seconds` (MySQL/MariaDB; elsewhere a no-op)."""
    if connection.vendor != "mysql":
        yield
        return
    mariadb = connection.mysql_is_mariadb
    variable = "max_statement_time" if mariadb else "max_execution_time"
    value = seconds if mariadb else max(1, round(seconds * 1000))
    connection.ensure_connection()
    (previous,) = _untracked(f"SELECT @@SESSION.{variable}")[0]
    _untracked(f"SET SESSION {variable} = %s", [value])
    try:
        yield
    finally:
        if connection.connection is not None:  # a lost connection takes its session with it
            _untracked(f"SET SESSION {variable} = %s", [previous])


def _untracked(sql: str, params: list | None = None) -> list[tuple]:
    """Run `sql` on a plain mysqlclient cursor: a change this module undoes itself is not session state left behind.

    Every other cursor notes session changes for the end-of-request check (`core.db.session_state`),
    which would otherwise drop the connection after every bounded block.
    """
    from MySQLdb.cursors import Cursor

    cursor = connection.connection.cursor(Cursor)
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()
