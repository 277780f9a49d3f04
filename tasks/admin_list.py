"""The admin's task list at millions of rows: nothing it runs reads the whole of `task_queue`.

- The count under the list is bounded: at most COUNT_CAP + 1 rows are counted ("more than
  10,000"), and pages stop there (narrow the list with its filters to go further back).
- Filters offer fixed choices (status, kind, queue from `queue_config`, task types from the
  handler registry): no `SELECT DISTINCT` over the table to build them.
- Search is by id, or with a prefix by owner (`owner:alice`), task type (`type:echo`),
  idempotency key (`key:...`), unique key (`unique:...`) or concurrency key (`concurrency:...`) — each one column, not an OR across
  columns that no index can serve.
- Only the id sorts the list (the primary key; every other column would sort the table).
- Every read of a list page runs under LIST_TIME_LIMIT seconds (`core.db.statement_time`); a
  filter with no index to use that would scan past it stops and the page says what to narrow.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from tasks import registry

COUNT_CAP = 10_000
LIST_TIME_LIMIT = 5.0  # seconds a list page's read may take before it is stopped
SEARCH_PREFIXES = {
    "owner": "owner__username",
    "type": "task_type",
    "key": "idempotency_key",
    "unique": "unique_key",
    "concurrency": "concurrency_key",
}


class CappedCountPaginator(Paginator):
    """A paginator that counts at most COUNT_CAP + 1 rows: one bounded read, never a full COUNT(*)."""

    @cached_property
    def count(self) -> int:
        return self.object_list[: COUNT_CAP + 1].count()

    @property
    def capped(self) -> bool:
        """True when there are more rows than were counted."""
        return self.count > COUNT_CAP

    @property
    def cap(self) -> int:
        return COUNT_CAP


class TaskChangeList(ChangeList):
    """The change list, sorted only by the columns in `sortable_by`, also when the URL asks for another."""

    def get_ordering_field(self, field_name: str) -> Any:
        if field_name not in (self.sortable_by or ()):
            return None  # skipped: the list keeps its default order
        return super().get_ordering_field(field_name)


class TaskTypeFilter(admin.SimpleListFilter):
    """Task type, offered from the handler registry (no DISTINCT over the table); any type works in the URL."""

    title = _("task type")
    parameter_name = "task_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(registry.registered_types())]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(task_type=value) if value else queryset


def search(queryset: QuerySet, term: str) -> QuerySet:
    """Filter by one column: an id, or `prefix:value` for the columns in SEARCH_PREFIXES; else nothing matches."""
    term = term.strip()
    if term.isdigit():
        return queryset.filter(pk=int(term))
    prefix, sep, value = term.partition(":")
    field = SEARCH_PREFIXES.get(prefix.strip().lower()) if sep else None
    if field is None or not value.strip():
        return queryset.none()
    return queryset.filter(**{field: value.strip()})


def search_help() -> Any:
    return _(
        "An id, or owner:NAME, type:TASK_TYPE, key:IDEMPOTENCY_KEY, unique:UNIQUE_KEY, concurrency:CONCURRENCY_KEY."
    )
