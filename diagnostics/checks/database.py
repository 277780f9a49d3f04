"""The database answers, fast enough, is a supported version, and a new session is set up as configured."""

from __future__ import annotations

from statistics import median
from time import perf_counter
from typing import Any

from django.conf import settings
from django.core.checks import ERROR, CheckMessage
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections

from core.db.errors import describe_database_error
from core.db.features import identity_problem, read_identity
from diagnostics.checks.messages import error, ok, warning
from diagnostics.checks.registration import database_check

SLOW_ROUND_TRIP_MS = 50.0
ROUND_TRIPS = 3
SESSION = "database.session"
# Django's own check that the session is strict (mysql.W002), and the modes it accepts as strict.
STRICT_MODE_CHECK = "mysql.W002"
STRICT_MODES = frozenset({"STRICT_TRANS_TABLES", "STRICT_ALL_TABLES"})


@database_check("database.connection", gate=True)
def check_connection() -> list[CheckMessage]:
    """Connect (if not yet connected) and time a few round trips."""
    check = "database.connection"
    where = describe_target()
    try:
        started = perf_counter()
        was_connected = connection.connection is not None
        connection.ensure_connection()
        connect_ms = (perf_counter() - started) * 1000
        round_trip_ms = median(_time_round_trip() for _ in range(ROUND_TRIPS))
    except DatabaseError as exc:
        return [
            error(
                check,
                "diagnostics.E030",
                f"Cannot connect to {where}: {describe_database_error(exc)}. The other database checks were skipped.",
                "Check MYSQL_HOST, MYSQL_PORT, MYSQL_USERNAME, MYSQL_PASSWORD and MYSQL_DATABASE, that the server "
                "is running and that this host may reach it.",
            )
        ]
    connected = "" if was_connected else f"connected in {connect_ms:.0f} ms, "
    message = f"{where}: {connected}round trip {round_trip_ms:.1f} ms."
    if round_trip_ms > SLOW_ROUND_TRIP_MS:
        return [
            warning(
                check,
                "diagnostics.W030",
                f"{message} Every request makes several round trips; over {SLOW_ROUND_TRIP_MS:.0f} ms makes "
                "the API slow.",
                "Run the app close to the database (same region / network), or check the network path.",
            )
        ]
    return [ok(check, message)]


@database_check("database.version", mysql_only=True)
def check_server_version() -> list[CheckMessage]:
    """MySQL 8.0.1+ or MariaDB 10.6+ (SKIP LOCKED), and not TiDB (which ignores it), as `SELECT VERSION()` says."""
    check = "database.version"
    identity = read_identity(connection)
    problem = identity_problem(identity)
    if identity.product == "TiDB":
        return [error(check, "diagnostics.E033", problem, "Run TaskHub on MySQL 8.0.1+ or MariaDB 10.6+.")]
    if problem:
        return [error(check, "diagnostics.E031", problem, "Upgrade to MySQL 8.0.1+ or MariaDB 10.6+.")]
    return [ok(check, f"{identity} is supported.")]


@database_check(SESSION, mysql_only=True, register=False)
def check_strict_mode() -> list[CheckMessage]:
    """Relay Django's strict-mode check (mysql.W002) as a new connection, like a web request's, sees it.

    `manage.py check --deploy --database default` runs Django's original on its own new connection.
    """
    fresh = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        found = [message for message in fresh.validation.check() if message.id == STRICT_MODE_CHECK]
    finally:
        fresh.close()
    return [
        (error if message.level >= ERROR else warning)(
            SESSION, STRICT_MODE_CHECK, str(message.msg), "Add STRICT_TRANS_TABLES to MYSQL_SQL_MODE."
        )
        for message in found
    ]


@database_check(SESSION, mysql_only=True)
def check_session_variables() -> list[CheckMessage]:
    """Open a new connection, as a web request would, and compare its session with the settings."""
    fresh = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        actual = read_session_variables(fresh)
    finally:
        fresh.close()
    mismatches = session_mismatches(actual, expected_session_variables())
    if mismatches:
        return [
            error(
                SESSION,
                "diagnostics.E032",
                "A new connection does not get the configured session: " + "; ".join(mismatches) + ".",
                "Check MYSQL_WAIT_TIMEOUT, MYSQL_INTERACTIVE_TIMEOUT and MYSQL_SQL_MODE, and that no proxy or "
                "pooler between the app and the server resets session variables.",
            )
        ]
    if not STRICT_MODES & set(_modes(actual["sql_mode"] or "")):
        # No ✅ beside Django's strict-mode warning (mysql.W002), which check_strict_mode relays.
        return []
    summary = ", ".join(f"{name}={value}" for name, value in actual.items())
    return [ok(SESSION, f"A new connection gets the configured session ({summary}).")]


def expected_session_variables() -> dict[str, Any]:
    """Return what init_command, the charset and the isolation option should set on every connection."""
    options = connection.settings_dict.get("OPTIONS", {})
    charset = options.get("charset", "utf8mb4")
    expected: dict[str, Any] = {"character_set_client": charset, "character_set_connection": charset}
    if "isolation_level" in options:
        expected["isolation"] = options["isolation_level"].upper().replace(" ", "-")
    for name, setting in (("wait_timeout", "MYSQL_WAIT_TIMEOUT"), ("interactive_timeout", "MYSQL_INTERACTIVE_TIMEOUT")):
        if hasattr(settings, setting):
            expected[name] = getattr(settings, setting)
    if hasattr(settings, "MYSQL_SQL_MODE"):
        expected["sql_mode"] = settings.MYSQL_SQL_MODE
    return expected


def read_session_variables(conn: Any) -> dict[str, Any]:
    """Return the session variables TaskHub sets, as the server reports them on `conn`."""
    isolation = "tx_isolation" if conn.mysql_is_mariadb else "transaction_isolation"
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT @@session.wait_timeout, @@session.interactive_timeout, @@session.sql_mode, "
            f"@@session.{isolation}, @@session.character_set_client, @@session.character_set_connection"
        )
        row = cursor.fetchone()
    names = ("wait_timeout", "interactive_timeout", "sql_mode", "isolation")
    return dict(zip(names + ("character_set_client", "character_set_connection"), row, strict=True))


def session_mismatches(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Return one phrase per session variable that differs from what is expected."""
    mismatches = []
    for name, wanted in expected.items():
        found = actual.get(name)
        if name == "sql_mode":
            missing = set(_modes(wanted)) - set(_modes(found or ""))
            if missing:
                mismatches.append(f"sql_mode lacks {','.join(sorted(missing))} (it is {found!r})")
        elif str(found) != str(wanted):
            mismatches.append(f"{name} is {found}, expected {wanted}")
    return mismatches


def describe_target() -> str:
    """Return vendor, host, port and database name: never the user's password."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"SQLite {settings_dict['NAME']}"
    host = settings_dict.get("HOST") or "localhost"
    return f"MySQL server {host}:{settings_dict.get('PORT') or 3306}, database {settings_dict['NAME']}"


def _time_round_trip() -> float:
    started = perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return (perf_counter() - started) * 1000


def _modes(value: str) -> list[str]:
    return [mode.strip().upper() for mode in value.split(",") if mode.strip()]
