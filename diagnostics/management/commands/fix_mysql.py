"""manage.py fix_mysql: show (or, with --apply, run) the SQL that makes the database utf8mb4 and InnoDB."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection

from core.db.errors import describe_database_error
from diagnostics.fixes.apply import apply_plan
from diagnostics.fixes.plan import Plan, build_plan
from diagnostics.fixes.report import render_outcome, render_plan
from diagnostics.fixes.snapshot import Snapshot, take_snapshot


class Command(BaseCommand):
    help = "Convert the configured MySQL database to utf8mb4 and InnoDB (dry run unless --apply)."
    # Meant to repair a database Django's own checks may complain about.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--apply", action="store_true", help="Run the SQL (default: only show it).")
        parser.add_argument(
            "--set-globals",
            action="store_true",
            help="Also set the recommended server variables (needs the SUPER privilege).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "mysql":
            raise CommandError(f"fix_mysql works on MySQL/MariaDB; the configured database is {connection.vendor}.")
        snapshot, plan = self._plan(options["set_globals"])
        self.stdout.write(render_plan(plan, snapshot, applying=options["apply"]))
        if not options["apply"] or plan.nothing_to_do:
            return
        outcomes = apply_plan(plan, connection=connection, report=self.stdout.write)
        self.stdout.write(render_outcome(outcomes, self._plan(options["set_globals"])[1]))
        failed = sum(1 for outcome in outcomes if not outcome.ok)
        if failed:
            raise CommandError(f"{failed} fix(es) failed; see above.", returncode=1)

    def _plan(self, set_globals: bool) -> tuple[Snapshot, Plan]:
        try:
            snapshot = take_snapshot(connection)
        except DatabaseError as exc:
            raise CommandError(f"Cannot inspect the database: {describe_database_error(exc)}") from exc
        return snapshot, build_plan(snapshot, set_globals=set_globals, sql_mode=settings.MYSQL_SQL_MODE)
