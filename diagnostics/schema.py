"""The schema the Django models describe, compared with what the database really has."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper


@dataclass(frozen=True)
class ForeignKeyExpectation:
    model: type[models.Model]
    field: models.ForeignKey

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def column(self) -> str:
        return self.field.column

    @property
    def parent(self) -> str:
        return self.field.target_field.model._meta.db_table

    @property
    def parent_column(self) -> str:
        return self.field.target_field.column

    def __str__(self) -> str:
        return f"{self.table}.{self.column} → {self.parent}.{self.parent_column}"


@dataclass
class TableDifferences:
    """What the database lacks compared with one model (empty lists: nothing missing)."""

    table: str
    table_missing: bool = False
    columns: list[str] = field(default_factory=list)
    named: list[str] = field(default_factory=list)
    unique_columns: list[str] = field(default_factory=list)
    foreign_keys: list[ForeignKeyExpectation] = field(default_factory=list)


def concrete_models(*app_labels: str) -> list[type[models.Model]]:
    """Return the models migrate creates tables for (of the given apps, or of every app)."""
    candidates = (
        [model for label in app_labels for model in apps.get_app_config(label).get_models()]
        if app_labels
        else apps.get_models()
    )
    return [model for model in candidates if model._meta.managed and not model._meta.proxy]


def declared_foreign_keys(model: type[models.Model]) -> list[ForeignKeyExpectation]:
    """Return the foreign keys the model asks the database to enforce."""
    return [
        ForeignKeyExpectation(model, field)
        for field in model._meta.local_concrete_fields
        if isinstance(field, models.ForeignKey) and field.db_constraint
    ]


def named_constraints(model: type[models.Model], connection: BaseDatabaseWrapper) -> list[str]:
    """Return the index and constraint names from the model's Meta that this backend keeps."""
    names = [index.name for index in model._meta.indexes]
    keeps_checks = connection.features.supports_table_check_constraints and (
        connection.features.can_introspect_check_constraints
    )
    for constraint in model._meta.constraints:
        if isinstance(constraint, models.CheckConstraint) and not keeps_checks:
            continue
        names.append(constraint.name)
    return names


def table_differences(model: type[models.Model], connection: BaseDatabaseWrapper) -> TableDifferences:
    """Compare one model with its table through Django's introspection (works on every backend)."""
    table = model._meta.db_table
    differences = TableDifferences(table)
    with connection.cursor() as cursor:
        if table not in connection.introspection.table_names(cursor):
            differences.table_missing = True
            return differences
        present_columns = {column.name for column in connection.introspection.get_table_description(cursor, table)}
        constraints = connection.introspection.get_constraints(cursor, table)
    differences.columns = [f.column for f in model._meta.local_concrete_fields if f.column not in present_columns]
    differences.named = [name for name in named_constraints(model, connection) if name not in constraints]
    differences.unique_columns = [
        f.column
        for f in model._meta.local_concrete_fields
        if f.unique and not f.primary_key and not _has_unique(constraints, f.column)
    ]
    differences.foreign_keys = [
        fk for fk in declared_foreign_keys(model) if not _has_foreign_key(constraints, fk, connection)
    ]
    return differences


def missing_foreign_keys(connection: BaseDatabaseWrapper) -> list[ForeignKeyExpectation]:
    """Return every model foreign key whose two tables exist but whose constraint does not."""
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
    missing = []
    for model in concrete_models():
        expected = declared_foreign_keys(model)
        if model._meta.db_table not in tables or not any(fk.parent in tables for fk in expected):
            continue
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
        missing.extend(
            fk for fk in expected if fk.parent in tables and not _has_foreign_key(constraints, fk, connection)
        )
    return missing


def _has_unique(constraints: dict[str, dict[str, Any]], column: str) -> bool:
    return any(info["unique"] and info["columns"] == [column] for info in constraints.values())


def _has_foreign_key(
    constraints: dict[str, dict[str, Any]], fk: ForeignKeyExpectation, connection: BaseDatabaseWrapper
) -> bool:
    if not connection.features.supports_foreign_keys:
        return True
    return any(
        info["foreign_key"] == (fk.parent, fk.parent_column) and info["columns"] == [fk.column]
        for info in constraints.values()
    )
