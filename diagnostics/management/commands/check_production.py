"""manage.py check_production: is this instance ready for production? (docs/OPERATIONS.md, "Production diagnostics")."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnostics.checks import run_production_checks
from diagnostics.checks.report import exit_code, render_json, render_text, summary


class Command(BaseCommand):
    help = "Check settings, secrets, the database and its schema for production; exit 0 clean, 1 errors, 2 warnings."
    # It reports every problem itself, including those Django's own checks would stop on.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
        parser.add_argument(
            "--fail-on-warning", action="store_true", help="Exit with status 2 when there are warnings (and no errors)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        fail_on_warning = options["fail_on_warning"]
        results = run_production_checks()
        if options["json"]:
            self.stdout.write(render_json(results, fail_on_warning=fail_on_warning))
        else:
            self.stdout.write(render_text(results))
        code = exit_code(results, fail_on_warning=fail_on_warning)
        if code:
            counts = summary(results)
            raise CommandError(
                f"not ready for production: {counts['error']} error(s), {counts['warning']} warning(s).",
                returncode=code,
            )
