"""Every migration is applied, and the database has none this code does not know."""

from __future__ import annotations

from django.core.checks import CheckMessage
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from diagnostics.checks.messages import error, ok, warning
from diagnostics.checks.registration import database_check

CHECK = "migrations"


@database_check(CHECK)
def check_migrations() -> list[CheckMessage]:
    """Compare the migration files with the django_migrations table."""
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    unapplied = [
        f"{migration.app_label}.{migration.name}" for migration, _ in executor.migration_plan(graph.leaf_nodes())
    ]
    unknown = sorted(
        f"{app}.{name}" for app, name in executor.loader.applied_migrations if (app, name) not in graph.nodes
    )
    results = []
    if unapplied:
        results.append(
            error(
                CHECK,
                "diagnostics.E050",
                f"{len(unapplied)} migration(s) not applied: {', '.join(unapplied)}.",
                "Run manage.py migrate before starting the new release.",
            )
        )
    if unknown:
        results.append(
            warning(
                CHECK,
                "diagnostics.W050",
                f"The database has migration(s) this code does not know: {', '.join(unknown)}.",
                "An older release is running against a newer schema: deploy the release that matches the database.",
            )
        )
    return results or [ok(CHECK, f"All {len(graph.nodes)} migrations are applied.")]
