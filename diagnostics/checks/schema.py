"""task_queue, queue_config and their siblings exist with the columns, indexes and keys the models declare."""

from __future__ import annotations

from django.core.checks import CheckMessage
from django.db import connection

from diagnostics.checks.messages import error, ok
from diagnostics.checks.registration import database_check
from diagnostics.schema import TableDifferences, concrete_models, table_differences

CHECK = "schema.tables"
# Expectations come from these apps' models, so a new index or field is checked without editing this.
CHECKED_APPS = ("tasks", "diagnostics")
REMEDY_MIGRATE = (
    "Run manage.py migrate. If migrations are all applied, the table was changed by hand: compare it with "
    "manage.py sqlmigrate <app> <migration>."
)


@database_check(CHECK)
def check_tables() -> list[CheckMessage]:
    """Every table of the task and diagnostics models matches its model."""
    models = concrete_models(*CHECKED_APPS)
    results = []
    for model in models:
        results.extend(_problems(table_differences(model, connection)))
    if results:
        return results
    tables = ", ".join(model._meta.db_table for model in models)
    return [ok(CHECK, f"{tables}: columns, indexes, constraints and foreign keys match the models.")]


def _problems(found: TableDifferences) -> list[CheckMessage]:
    table = found.table
    if found.table_missing:
        return [error(CHECK, "diagnostics.E044", f"Table {table} does not exist.", REMEDY_MIGRATE)]
    problems = []
    if found.columns:
        problems.append(
            error(CHECK, "diagnostics.E045", f"{table} lacks column(s) {', '.join(found.columns)}.", REMEDY_MIGRATE)
        )
    missing_indexes = found.named + [f"unique index on {column}" for column in found.unique_columns]
    if missing_indexes:
        problems.append(
            error(
                CHECK,
                "diagnostics.E046",
                f"{table} lacks index(es)/constraint(s) {', '.join(missing_indexes)}: the queries they serve "
                "scan the table, or the rules they enforce are not enforced.",
                REMEDY_MIGRATE,
            )
        )
    if found.foreign_keys:
        problems.append(
            error(
                CHECK,
                "diagnostics.E047",
                f"{table} lacks foreign key(s) {', '.join(map(str, found.foreign_keys))}: rows can point at nothing.",
                "Run manage.py fix_mysql (dry run first) to recreate them; it reports orphan rows that block it.",
            )
        )
    return problems
