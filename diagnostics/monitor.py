"""The DB monitor: what this process's database connection and the server look like now."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from django.conf import settings
from django.db import connection, connections

from core import metrics
from core.db.replica import REPLICA, replica_configured, replica_state
from core.db.setup import connection_info, read_session_variables

SERVER_STATUS_NAMES = (
    "Threads_connected",
    "Threads_running",
    "Max_used_connections",
    "Aborted_connects",
    "Aborted_clients",
)


def db_monitor_snapshot() -> dict[str, Any]:
    """Return the DB monitor's report for the default connection of this process."""
    rtt_ms = _ping_ms()  # opens the connection first when needed, so the rest reads a live one
    snapshot: dict[str, Any] = {
        "vendor": connection.display_name,
        "connection": _connection_report(),
        "ping_ms": rtt_ms,
        "counters": metrics.process_counter_values(),
    }
    if connection.vendor == "mysql":
        snapshot["server_version"] = connection.mysql_server_info
        snapshot["connection"]["session"] = read_session_variables(connection)
        snapshot["server"] = mysql_server_usage()
    elif connection.vendor == "sqlite":
        snapshot["server_version"] = sqlite3.sqlite_version
        snapshot["sqlite"] = _sqlite_settings()
    if replica_configured():
        snapshot["replica"] = replica_report()
    return snapshot


def replica_report() -> dict[str, Any]:
    """Return the read replica's address (never its password) and how far behind the primary it is."""
    state = replica_state(REPLICA)
    settings_dict = connections[REPLICA].settings_dict
    limit = settings.DATABASE_REPLICA_MAX_LAG_SECONDS
    return {
        "alias": REPLICA,
        "server": f"{settings_dict.get('HOST') or 'localhost'}:{settings_dict.get('PORT') or 3306}",
        "database": str(settings_dict["NAME"]),
        "lag_seconds": state.lag_seconds,
        "io_running": state.io_running,
        "sql_running": state.sql_running,
        "max_lag_seconds": limit,
        "healthy": state.replicating and state.lag_seconds is not None and state.lag_seconds <= limit,
        "error": state.error,
    }


def mysql_server_usage() -> dict[str, Any]:
    """Return the server's connection counts, its limit and the usage ratio."""
    placeholders = ", ".join(["%s"] * len(SERVER_STATUS_NAMES))
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({placeholders})", SERVER_STATUS_NAMES)
        status = {name: int(value) for name, value in cursor.fetchall()}
        cursor.execute("SELECT @@GLOBAL.max_connections")
        (max_connections,) = cursor.fetchone()
    usage = {name.lower(): status.get(name) for name in SERVER_STATUS_NAMES}
    usage["max_connections"] = int(max_connections)
    usage["usage_ratio"] = round(usage["threads_connected"] / max_connections, 4) if max_connections else None
    return usage


def _ping_ms() -> float:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return round((time.perf_counter() - started) * 1000, 3)


def _connection_report() -> dict[str, Any]:
    info = connection_info(connection)
    report: dict[str, Any] = {
        "alias": connection.alias,
        "age_seconds": round(info.age_seconds, 3) if info else None,
        "conn_max_age": connection.settings_dict["CONN_MAX_AGE"],
        "health_checks": connection.settings_dict["CONN_HEALTH_CHECKS"],
    }
    if connection.vendor == "mysql":
        report["thread_id"] = connection.connection.thread_id()
    return report


def _sqlite_settings() -> dict[str, Any]:
    pragmas = ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
    values: dict[str, Any] = {"path": str(connection.settings_dict["NAME"])}
    with connection.cursor() as cursor:
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
            values[pragma] = cursor.fetchone()[0]
    values["transaction_mode"] = connection.settings_dict["OPTIONS"].get("transaction_mode") or "DEFERRED"
    return values
