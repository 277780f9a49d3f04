"""utf8mb4, one collation and InnoDB everywhere: the database default, every table, every text column."""

from __future__ import annotations

from django.core.checks import CheckMessage
from django.db import connection

from diagnostics.checks.messages import error, ok
from diagnostics.checks.registration import database_check
from diagnostics.fixes.snapshot import TARGET_CHARSET, read_table_overview, target_collation

REMEDY_FIX_MYSQL = "Run manage.py fix_mysql to see the exact SQL and why, then manage.py fix_mysql --apply."
MAX_LISTED = 10


@database_check("schema.charsets", mysql_only=True)
def check_charsets() -> list[CheckMessage]:
    """The database default, each table and each text column use utf8mb4 (emoji and all of CJK fit)."""
    check = "schema.charsets"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
            "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE()"
        )
        database, charset, collation = cursor.fetchone()
        tables = read_table_overview(cursor)
        target = target_collation(cursor, database_collation=collation, tables=tables)
    results = []
    if charset != TARGET_CHARSET:
        results.append(
            error(
                check,
                "diagnostics.E040",
                f"Database {database} defaults to {charset} ({collation}): tables created later inherit it.",
                REMEDY_FIX_MYSQL,
            )
        )
    other_tables = [f"{table.name} ({table.charset})" for table in tables if table.charset != TARGET_CHARSET]
    if other_tables:
        results.append(
            error(
                check,
                "diagnostics.E041",
                f"Tables not in utf8mb4: {_listing(other_tables)}. 4-byte characters (emoji) fail or turn into '?'.",
                REMEDY_FIX_MYSQL,
            )
        )
    other_columns = [
        f"{table.name}.{column.name} ({column.charset})"
        for table in tables
        if table.charset == TARGET_CHARSET
        for column in table.columns
        if column.charset not in (None, TARGET_CHARSET)
    ]
    if other_columns:
        results.append(
            error(
                check, "diagnostics.E042", f"Text columns not in utf8mb4: {_listing(other_columns)}.", REMEDY_FIX_MYSQL
            )
        )
    results.extend(_collation_findings(check, database, collation, target, tables))
    return results or [
        ok(check, f"Database {database}, its {len(tables)} tables and their text columns are utf8mb4 ({target}).")
    ]


def _collation_findings(check: str, database: str, collation: str, target: str, tables: list) -> list[CheckMessage]:
    """Name the database default, each table and each text column whose collation is not `target`."""
    # A database default not in utf8mb4 is E040; converting it sets the collation too.
    differing = (
        [f"database {database} ({collation})"] if collation != target and collation.startswith("utf8mb4_") else []
    )
    for table in tables:
        if table.charset != TARGET_CHARSET:
            continue  # reported above; converting it sets the collation too
        if table.collation != target:
            differing.append(f"{table.name} ({table.collation})")  # converting it converts its columns
            continue
        differing += [
            f"{table.name}.{column.name} ({column.collation})"
            for column in table.columns_collated_otherwise(target)
            if column.charset == TARGET_CHARSET
        ]
    if not differing:
        return []
    return [
        error(
            check,
            "diagnostics.E048",
            f"Not in the collation {target}: {_listing(differing)}. Comparing text across collations fails "
            "(MySQL error 1267), and sorting and unique keys disagree between tables.",
            "Set MYSQL_COLLATION to choose another. " + REMEDY_FIX_MYSQL,
        )
    ]


@database_check("schema.engines", mysql_only=True)
def check_engines() -> list[CheckMessage]:
    """Every table is InnoDB: transactions, row locks, SKIP LOCKED and foreign keys."""
    check = "schema.engines"
    with connection.cursor() as cursor:
        tables = read_table_overview(cursor)
    others = [f"{table.name} ({table.engine})" for table in tables if table.engine != "InnoDB"]
    if others:
        return [
            error(
                check,
                "diagnostics.E043",
                f"Tables not on InnoDB: {_listing(others)}. They have no transactions, no row locks and no "
                "foreign keys: a failed request leaves half its writes behind.",
                REMEDY_FIX_MYSQL,
            )
        ]
    return [ok(check, f"All {len(tables)} tables are InnoDB.")]


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown if len(items) <= MAX_LISTED else f"{shown} and {len(items) - MAX_LISTED} more"
