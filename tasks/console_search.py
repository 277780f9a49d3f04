"""The console's task search: the bulk actions' filter, newest first, by keyset on an index.

The filter is the bulk actions' own (`tasks.bulk.validate_filters`: the same fields, the same 400
codes, the same anchor rule). Each request reads at most SCAN_LIMIT ids from the filter's anchor
index, newest first from the cursor (`before`, a task id), keeps those that match the whole
filter and answers at most PAGE_SIZE of them:

- an error group: task_failure_group_idx (failure_group_id, id);
- an owner: task_owner_id_idx (owner_id, id), with a status task_owner_status_idx;
- the status pending or running alone: task_claim_idx (status, ...), the live set.

When the filter is its anchor's equalities and nothing else, the anchor's first PAGE_SIZE + 1 ids
are the page: nothing more is read. The rows are then read by primary key from `task_queue`
alone, and the queue and owner names apart (`tasks.console.with_names`).

A filter with none of these is refused with 400 `filter_not_indexed`: no index walks it without
reading the table's history. When the narrowing fields (queue, type, time range, keys) leave
fewer than a page in the SCAN_LIMIT ids read, the answer says so (`scanned`, `partial`) and its
`next` cursor carries on from the last id read: each request stays bounded, never a full scan.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from tasks import bulk
from tasks.console import _page, error_response, staff_only, with_names

PAGE_SIZE = 50
SCAN_LIMIT = 1000
COLUMNS = (
    "pk",
    "task_type",
    "status",
    "queue_id",
    "owner_id",
    "priority",
    "attempts",
    "created_at",
    "finished_at",
    "failure_group_id",
    "unique_key",
    "concurrency_key",
)


class SearchInvalid(ValueError):
    def __init__(self, detail: str, code: str, field: str | None) -> None:
        super().__init__(detail)
        self.detail, self.code, self.field = detail, code, field


def _raw_filters(params: Any) -> dict[str, str]:
    return {name: params[name] for name in params if name not in ("before",) and params[name] != ""}


def search(raw: dict[str, str], before: str = "") -> dict[str, Any]:
    """One page of tasks matching the filter, newest first; raise SearchInvalid (400 + code) on bad input."""
    try:
        cursor = int(before) if before else None
    except ValueError:
        cursor = -1
    if cursor is not None and cursor <= 0:
        raise SearchInvalid(_("before must be a task id."), "invalid_cursor", "before")
    try:
        filters = bulk.validate_filters(raw)
    except bulk.BulkActionInvalid as exc:
        raise SearchInvalid(exc.detail, exc.code, exc.field) from exc
    scan = PAGE_SIZE + 1 if _anchor_is_the_filter(filters) else SCAN_LIMIT
    ids = bulk.anchor_ids_before(filters, cursor, scan)
    rows = _rows(filters, ids)
    if len(rows) > PAGE_SIZE:
        rows, next_cursor = rows[:PAGE_SIZE], rows[PAGE_SIZE - 1]["pk"]
    elif len(ids) == scan:
        next_cursor = ids[-1]  # more ids lie beyond what this request read
    else:
        next_cursor = None
    partial = len(ids) == scan and len(rows) < PAGE_SIZE
    query = urlencode({name: raw[name] for name in bulk.FILTER_FIELDS if raw.get(name)})
    return {
        "tasks": [_row(row) for row in rows],
        "next": next_cursor,
        "scanned": len(ids),
        "partial": partial,
        "note": (
            _(
                "Read %(scanned)d tasks of the filter's index from the cursor and %(found)d matched; "
                "older ones may match too: use More."
            )
            % {"scanned": len(ids), "found": len(rows)}
            if partial
            else ""
        ),
        "filters": filters,
        "bulk_url": f"{reverse('taskhub-console-bulk')}?{query}",
        "generated_at": timezone.now().isoformat(),
    }


def _anchor_is_the_filter(filters: dict[str, Any]) -> bool:
    """Return True when the anchor index's equalities are the whole filter (every anchor id matches)."""
    _index, equalities = bulk.anchor_index(filters)
    return len(filters) == len(equalities)


def _rows(filters: dict[str, Any], ids: list[int]) -> list[dict[str, Any]]:
    """Return the newest PAGE_SIZE + 1 of `ids` that match the whole filter, with their queue and owner names."""
    if not ids:
        return []
    return with_names(list(bulk.matching(filters).filter(pk__in=ids).order_by("-pk").values(*COLUMNS)[: PAGE_SIZE + 1]))


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["pk"],
        "task_type": row["task_type"],
        "status": row["status"],
        "queue": row["queue"],
        "owner": row["owner"],
        "priority": row["priority"],
        "attempts": row["attempts"],
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "failure_group": row["failure_group_id"],
        "unique_key": row["unique_key"],
        "concurrency_key": row["concurrency_key"],
        "admin_url": reverse("admin:tasks_taskqueue_change", args=[row["pk"]]),
    }


@staff_only
@require_GET
def tasks_page(request: HttpRequest) -> HttpResponse:
    """The search form; with a filter in the query string, its first page too (or the refusal)."""
    raw = _raw_filters(request.GET)
    initial: dict[str, Any] = {"tasks": [], "next": None, "note": "", "error": None}
    if raw or request.GET.get("before"):
        try:
            initial = {**search(raw, request.GET.get("before", "")), "error": None}
        except SearchInvalid as exc:
            initial["error"] = {"detail": exc.detail, "code": exc.code, "field": exc.field}
    response = _page(request, "admin/taskhub/console_tasks.html", _("Task search"), initial)
    response.context_data["values"] = raw
    response.context_data["labels"] = {
        **response.context_data["labels"],
        "no_tasks": _("No task matches."),
        "bulk": _("Apply a bulk action to this filter"),
    }
    return response


@staff_only
@require_GET
def tasks_data(request: HttpRequest) -> JsonResponse:
    try:
        return JsonResponse(search(_raw_filters(request.GET), request.GET.get("before", "")))
    except SearchInvalid as exc:
        return error_response(400, exc.code, exc.detail, field=exc.field)
