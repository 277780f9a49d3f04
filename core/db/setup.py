"""Verify, once per new connection, that the MySQL session settings really took effect."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

from core import metrics
from core.db.session_state import start_tracking

logger = logging.getLogger("taskhub.db")

SESSION_READY_MARKER = "✅ MySQL会话优化完成"
SESSION_MISMATCH_MARKER = "❌ MySQL会话设置未生效"
REQUIRED_CHARSET = "utf8mb4"


@dataclass
class ConnectionInfo:
    """What this process knows about one open connection (read by the DB monitor)."""

    opened_monotonic: float = field(default_factory=time.monotonic)
    opened_at: float = field(default_factory=time.time)
    session: dict[str, object] = field(default_factory=dict)

    @property
    def age_seconds(self) -> float:
        return time.monotonic() - self.opened_monotonic


def connection_info(conn: BaseDatabaseWrapper) -> ConnectionInfo | None:
    """Return the info recorded when `conn`'s current connection was opened, if any."""
    info = getattr(conn, "taskhub_connection_info", None)
    if info is None or conn.connection is None or info[0] is not conn.connection:
        return None
    return info[1]


def on_connection_created(sender: type, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    """Record the new connection and, on MySQL, check and log its session variables."""
    info = ConnectionInfo()
    connection.taskhub_connection_info = (connection.connection, info)  # type: ignore[attr-defined]
    metrics.DB_CONNECTIONS_OPENED.inc()
    if connection.vendor != "mysql":
        return
    info.session = read_session_variables(connection)
    start_tracking(connection.connection)  # after Django's set-up: what it set is the baseline
    problems = session_problems(info.session)
    applied = " ".join(f"{name}={value}" for name, value in info.session.items())
    if problems:
        logger.error("%s: %s (applied: %s)", SESSION_MISMATCH_MARKER, "; ".join(problems), applied)
    else:
        logger.info("%s: %s", SESSION_READY_MARKER, applied)


def isolation_variable(conn: BaseDatabaseWrapper) -> str:
    """Return the isolation variable's name: MariaDB before 11.1 knows only `tx_isolation`."""
    if conn.mysql_is_mariadb and conn.mysql_version < (11, 1):
        return "tx_isolation"
    return "transaction_isolation"


def read_session_variables(conn: BaseDatabaseWrapper) -> dict[str, object]:
    """Read back the session variables in effect on `conn` (one query)."""
    names = [
        "wait_timeout",
        "interactive_timeout",
        "sql_mode",
        isolation_variable(conn),
        "autocommit",
        "character_set_client",
        "character_set_connection",
        "character_set_results",
        "collation_connection",
        "time_zone",
    ]
    with conn.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"@@SESSION.{name}" for name in names))
        row = cursor.fetchone()
    values = dict(zip(names, row, strict=True))
    values["isolation"] = values.pop(isolation_variable(conn))
    return values


def session_problems(session: dict[str, object]) -> list[str]:
    """Return how the session differs from the configured settings (empty when it matches)."""
    problems = []
    for name, expected in (
        ("wait_timeout", settings.MYSQL_WAIT_TIMEOUT),
        ("interactive_timeout", settings.MYSQL_INTERACTIVE_TIMEOUT),
    ):
        if int(session[name]) != expected:
            problems.append(f"{name}={session[name]} (expected {expected})")
    missing = _modes(settings.MYSQL_SQL_MODE) - _modes(str(session["sql_mode"]))
    if missing:
        problems.append(f"sql_mode lacks {','.join(sorted(missing))}")
    expected_isolation = settings.MYSQL_ISOLATION_LEVEL.upper().replace(" ", "-")
    if str(session["isolation"]).upper() != expected_isolation:
        problems.append(f"isolation={session['isolation']} (expected {expected_isolation})")
    for name in ("character_set_client", "character_set_connection", "character_set_results"):
        if session[name] != REQUIRED_CHARSET:
            problems.append(f"{name}={session[name]} (expected {REQUIRED_CHARSET})")
    return problems


def _modes(sql_mode: str) -> set[str]:
    return {mode.strip().upper() for mode in sql_mode.split(",") if mode.strip()}
