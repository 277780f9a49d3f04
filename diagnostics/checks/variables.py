"""DATABASE_TYPE=mysql and the MYSQL_* variables a production instance needs."""

from __future__ import annotations

import os

from django.core.checks import CheckMessage
from django.db import connection

from diagnostics.checks.messages import error, ok, warning
from diagnostics.checks.registration import configuration_check

REQUIRED_MYSQL_VARIABLES = ("MYSQL_HOST", "MYSQL_USERNAME", "MYSQL_PASSWORD", "MYSQL_DATABASE")
MYSQL_ONLY_CHECKS = "server version, session variables, charsets, engines, time-zone tables, clock skew"


@configuration_check("variables.database_type")
def check_database_type() -> list[CheckMessage]:
    """Production runs on MySQL/MariaDB, not SQLite."""
    check = "variables.database_type"
    if connection.vendor == "mysql":
        return [ok(check, "DATABASE_TYPE=mysql.")]
    return [
        error(
            check,
            "diagnostics.E004",
            f"The database is {connection.vendor} (DATABASE_TYPE={os.environ.get('DATABASE_TYPE', 'sqlite')}); "
            f"production needs MySQL 8.0+ or MariaDB 10.6+. The MySQL-only checks ({MYSQL_ONLY_CHECKS}) were "
            "not run.",
            "Set DATABASE_TYPE=mysql and the MYSQL_* variables, run manage.py migrate, then re-run.",
        )
    ]


@configuration_check("variables.mysql")
def check_mysql_variables() -> list[CheckMessage]:
    """Every MYSQL_* variable is set; the password is not empty and the account is not root."""
    check = "variables.mysql"
    missing = [name for name in REQUIRED_MYSQL_VARIABLES if name not in os.environ]
    if missing:
        return [
            error(
                check,
                "diagnostics.E005",
                f"Not set: {', '.join(missing)} (the built-in development defaults would be used).",
                "Set every MYSQL_* variable in the environment or .env (see .env.example).",
            )
        ]
    results = []
    if "MYSQL_PORT" not in os.environ:
        results.append(
            warning(
                check,
                "diagnostics.W003",
                "MYSQL_PORT is not set; 3306 is used.",
                "Set MYSQL_PORT explicitly so every instance and worker is configured the same way.",
            )
        )
    if not os.environ["MYSQL_PASSWORD"]:
        results.append(
            warning(
                check,
                "diagnostics.W002",
                "MYSQL_PASSWORD is empty: the database account has no password.",
                "Give the TaskHub account a strong password and set MYSQL_PASSWORD.",
            )
        )
    if os.environ["MYSQL_USERNAME"] == "root":
        results.append(
            warning(
                check,
                "diagnostics.W004",
                "MYSQL_USERNAME is root.",
                "Create a dedicated account with privileges on the TaskHub database only.",
            )
        )
    return results or [ok(check, "MYSQL_HOST, MYSQL_PORT, MYSQL_USERNAME, MYSQL_PASSWORD and MYSQL_DATABASE are set.")]
