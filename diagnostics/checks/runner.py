"""Run the registered production checks without letting one failure stop the others."""

from __future__ import annotations

from django.db import DatabaseError, transaction

from core.db.errors import describe_database_error
from diagnostics.checks.base import REGISTRY, CheckResult, ProductionCheck, Status, error

QUERY_FAILED = "diagnostics.E039"


def run_production_checks(
    *, configuration: bool = True, database: bool = True, relayed: bool = True
) -> list[CheckResult]:
    """Run every registered check that applies here and return the results in order.

    1. Configuration checks read settings and the environment only.
    2. Database checks run after the connection gate; if it fails, the rest are skipped
       (the gate's own error says so) instead of each timing out on its own.
    3. MySQL-only checks are left out on other backends (the DATABASE_TYPE check reports that).

    `relayed=False` leaves out the checks that only relay Django's own (for Django's framework).
    """
    results: list[CheckResult] = []
    blocked = False
    for check in REGISTRY:
        if not relayed and not check.in_django_checks:
            continue
        if not check.needs_database:
            if configuration:
                results.extend(check.function())
            continue
        if not database or blocked or not check.applies():
            continue
        found = _run_database_check(check)
        blocked = check.gate and any(result.status is Status.ERROR for result in found)
        results.extend(found)
    return results


def _run_database_check(check: ProductionCheck) -> list[CheckResult]:
    if check.gate:
        return check.function()
    try:
        # A savepoint per check: a failed query must not poison the connection for the next check.
        with transaction.atomic():
            return check.function()
    except DatabaseError as exc:
        return [
            error(
                check.name,
                QUERY_FAILED,
                f"{check.name}: the check could not run: {describe_database_error(exc)}.",
                "Fix the database error above (privileges, missing tables: run manage.py migrate), then re-run.",
            )
        ]
