"""Notice session state a statement leaves behind beyond its transaction, on MySQL/MariaDB.

A rollback ends a transaction, but not what a statement leaves on the session itself: a lock
from `GET_LOCK()`, `LOCK TABLES`, a user variable, a changed session variable (`sql_mode`,
`time_zone`, ...), a temporary table, a prepared statement, another default schema. On a
persistent connection the next request (or task) would inherit it.

Every cursor of a MySQL connection is a `TrackingCursor` (set on each new connection, after
Django's own set-up): it looks at each statement's SQL, before its parameters are bound, for
the ones that change the session, and marks the connection. That costs one regular-expression
search per statement and no round trip; the cursors Django makes and the ones taken from the
raw DB-API connection (`connection.connection.cursor()`) are the same class, so both are seen.
Only the driver's low-level `query()` (no cursor) goes unseen. `core.db.session` then drops a
marked connection at the end of the request: closing it is the one reset that clears all of it.

The same look notes the statements that may leave a transaction open on the server behind
Django's back (`START TRANSACTION`, `BEGIN`, `XA`, `… AND CHAIN`, `CALL`, `EXECUTE`, `autocommit`).
With autocommit on, nothing else can: so the end-of-request check (`core.db.session`) asks the
server only after one of them, and a request that ran none costs no round trip to check.
"""

from __future__ import annotations

import re
from typing import Any

from MySQLdb.cursors import Cursor

# A statement that starts by changing the session. SET TRANSACTION (the next transaction only),
# SET autocommit (the transaction guard's business, restored there) and SET GLOBAL/PERSIST (not
# the session's) are left out.
_STARTS = re.compile(
    r"""\s*(?:
        (?P<set>SET\s+(?!(?:SESSION\s+|LOCAL\s+)?(?:TRANSACTION|autocommit)\b|GLOBAL\b|PERSIST))
      | (?P<lock>LOCK\s+TABLES?\b)
      | (?P<temporary>(?:CREATE|DROP)\s+TEMPORARY\b)
      | (?P<prepare>PREPARE\b)
      | (?P<use>USE\b)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_FIRST_WORDS = ("SET", "LOCK", "CREATE", "DROP", "PREPARE", "USE")
_SETS_USER_VARIABLE = re.compile(r"\s*SET\s+@(?!@)", re.IGNORECASE)
# Anywhere in a statement: a named lock taken, a user variable assigned (`@v :=`, `INTO @v`).
_NAMED_LOCK = re.compile(r"\bGET_LOCK\s*\(", re.IGNORECASE)
_ASSIGNS_USER_VARIABLE = re.compile(r"(?<![@\w`'\"])@(?!@)[\w$]+\s*:=|\bINTO\s+@(?!@)", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`")
# Words that may open (or keep open) a transaction with autocommit on, or turn autocommit off.
# Found anywhere, since mysqlclient lets one string hold several statements; a false alarm only
# costs the check its round trip.
_TRANSACTION_WORDS = ("transaction", "begin", "xa", "chain", "call", "execute", "autocommit")
_MAY_OPEN_TRANSACTION = re.compile(
    r"\b(?:START\s+TRANSACTION|BEGIN|XA\s+(?:START|BEGIN)|AND\s+CHAIN|CALL|EXECUTE|AUTOCOMMIT)\b", re.IGNORECASE
)
WHAT = {
    "set": "session variable",
    "lock": "LOCK TABLES",
    "temporary": "temporary table",
    "prepare": "prepared statement",
    "use": "default schema",
}


def may_open_transaction(sql: str | bytes | bytearray) -> bool:
    """Return True when `sql` may leave a transaction open (or autocommit off) on the session."""
    if not isinstance(sql, str):
        sql = bytes(sql).decode("utf-8", "replace")
    lowered = sql.lower()
    if not any(word in lowered for word in _TRANSACTION_WORDS):
        return False
    return _MAY_OPEN_TRANSACTION.search(_QUOTED.sub("''", sql)) is not None


def session_change(sql: str | bytes | bytearray) -> str | None:
    """Return what `sql` leaves on the session beyond its transaction, or None.

    Cheap for the statements that change nothing (nearly all): a look at the first word, and
    a search only when the text holds `get_lock` or `@` at all.
    """
    if not isinstance(sql, str):
        sql = bytes(sql).decode("utf-8", "replace")
    if sql.lstrip()[:7].upper().startswith(_FIRST_WORDS):
        starts = _STARTS.match(sql)
        if starts is not None:
            if starts.lastgroup == "set" and _SETS_USER_VARIABLE.match(sql):
                return "user variable"
            return WHAT[starts.lastgroup or ""]
    if "get_lock" in sql.lower() and _NAMED_LOCK.search(sql):
        return "GET_LOCK"
    if "@" in sql and _ASSIGNS_USER_VARIABLE.search(_QUOTED.sub("''", sql)):
        return "user variable"
    return None


class TrackingCursor(Cursor):
    """mysqlclient's cursor, noting on its connection each statement that changes the session."""

    _in_executemany = False

    def execute(self, query: Any, args: Any = None) -> Any:
        if not self._in_executemany:  # executemany's own batches were looked at as its template
            _note(self, query)
        return super().execute(query, args)

    def executemany(self, query: Any, args: Any) -> Any:
        _note(self, query)
        self._in_executemany = True
        try:
            return super().executemany(query, args)
        finally:
            self._in_executemany = False


def _note(cursor: Cursor, query: Any) -> None:
    raw = cursor.connection
    raw.taskhub_statements = getattr(raw, "taskhub_statements", 0) + 1
    if may_open_transaction(query):
        raw.taskhub_may_be_in_transaction = True
    what = session_change(query)
    if what is not None:
        changes = getattr(raw, "taskhub_session_changes", None)
        if changes is not None:
            changes.add(what)


def start_tracking(raw_connection: Any) -> None:
    """Give a freshly set-up mysqlclient connection tracking cursors and an empty record."""
    raw_connection.taskhub_session_changes = set()
    raw_connection.taskhub_statements = 0
    raw_connection.taskhub_may_be_in_transaction = False
    raw_connection.cursorclass = TrackingCursor


def statements_run(raw_connection: Any) -> int:
    """Return how many statements the connection's cursors have run (0 when untracked)."""
    return getattr(raw_connection, "taskhub_statements", 0)


def session_changes(raw_connection: Any) -> set[str]:
    """Return what the statements on this connection left on its session (empty when nothing, or untracked)."""
    return getattr(raw_connection, "taskhub_session_changes", None) or set()


def known_outside_transaction(raw_connection: Any) -> bool:
    """Return True when no transaction can be open on this session without Django knowing.

    True only for a tracked connection with autocommit on (mysqlclient reads the flag from the
    server's last reply, no round trip) whose cursors ran no statement that may open one since
    `forget_transaction_statements`. False means: ask the server.
    """
    if getattr(raw_connection, "taskhub_may_be_in_transaction", True):
        return False
    try:
        return bool(raw_connection.get_autocommit())
    except Exception:  # a closed connection (mysqlclient raises its own, unwrapped errors): ask
        return False


def forget_transaction_statements(raw_connection: Any) -> None:
    """The server has just said the session holds no transaction (or it was rolled back)."""
    if hasattr(raw_connection, "taskhub_may_be_in_transaction"):
        raw_connection.taskhub_may_be_in_transaction = False
