"""The console's Keys page: concurrency keys at their limit now, and the unique keys held by live tasks.

Staff only (`console.staff_only`: 403 `staff_only` for anyone else); read-only. Both lists come
from the live set, never from `task_queue`'s history:

- **concurrency keys at their limit**: for the queues with `per_key_concurrency`, the running
  tasks per (queue, key) in one grouped read of task_claim_idx's (status='running', queue_id)
  prefix — the running tasks, as the claim counts them (`fair_claim.running_per_key`: keys
  folded as the database compares them) — keeping the keys with as many running as the limit;
  at most KEYS_LIMIT of them, fullest first;
- **live unique keys**: the pending and running tasks that hold an `active_unique_key`, newest
  first by keyset on the id: each request reads at most SCAN_LIMIT ids of each live status from
  task_claim_idx (`bulk.anchor_ids_before`, FORCE INDEX on MySQL/MariaDB), then those rows by
  primary key, and answers at most PAGE_SIZE of them; when the keys are sparse among the live
  tasks it says so (`partial`) and `next` carries on below the last id read.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from tasks import bulk
from tasks.console import _page, error_response, staff_only, with_names
from tasks.fair_claim import fold_key
from tasks.models import QueueConfig, TaskQueue, TaskStatus

KEYS_LIMIT = 200
PAGE_SIZE = 50
SCAN_LIMIT = 1000
LIVE = (TaskStatus.PENDING, TaskStatus.RUNNING)


class CursorInvalid(ValueError):
    pass


def keys_at_limit() -> dict[str, Any]:
    """The concurrency keys with `per_key_concurrency` tasks running now, per queue, fullest first."""
    queues = {q.pk: q for q in QueueConfig.objects.filter(per_key_concurrency__gt=0).order_by("name")}
    if not queues:
        return {"keys": [], "queues": [], "truncated": False}
    # Served by task_claim_idx's (status, queue_id) prefix: the running tasks of these queues.
    rows = (
        TaskQueue.objects.filter(status=TaskStatus.RUNNING, queue_id__in=list(queues), concurrency_key__isnull=False)
        .values_list("queue_id", "concurrency_key")
        .annotate(n=Count("id"))
        .order_by()
    )
    running: dict[tuple[int, str], tuple[str, int]] = {}
    for queue_id, key, n in rows:
        folded = (queue_id, fold_key(key))
        shown, before = running.get(folded, (key, 0))
        running[folded] = (shown, before + n)
    full = [
        {
            "queue": queues[queue_id].name,
            "key": shown,
            "running": n,
            "limit": queues[queue_id].per_key_concurrency,
            "search_url": reverse("taskhub-console-tasks")
            + "?"
            + urlencode({"status": "running", "queue": queues[queue_id].name, "concurrency_key": shown}),
        }
        for (queue_id, _folded), (shown, n) in running.items()
        if n >= queues[queue_id].per_key_concurrency
    ]
    full.sort(key=lambda row: (-row["running"], row["queue"], row["key"]))
    return {
        "keys": full[:KEYS_LIMIT],
        "queues": [{"name": q.name, "per_key_concurrency": q.per_key_concurrency} for q in queues.values()],
        "truncated": len(full) > KEYS_LIMIT,
    }


def live_unique_keys(before: str = "") -> dict[str, Any]:
    """One page of live tasks holding a unique key, newest first; raise CursorInvalid on a bad `before`."""
    try:
        cursor = int(before) if before else None
    except ValueError:
        cursor = -1
    if cursor is not None and cursor <= 0:
        raise CursorInvalid(before)
    ids = sorted(
        {pk for status in LIVE for pk in bulk.anchor_ids_before({"status": status}, cursor, SCAN_LIMIT)}, reverse=True
    )[:SCAN_LIMIT]
    rows = (
        with_names(
            list(
                TaskQueue.objects.filter(pk__in=ids, active_unique_key__isnull=False)
                .order_by("-pk")
                .values("pk", "unique_key", "status", "task_type", "owner_id", "queue_id", "created_at")[
                    : PAGE_SIZE + 1
                ]
            )
        )
        if ids
        else []
    )
    if len(rows) > PAGE_SIZE:
        rows, next_cursor = rows[:PAGE_SIZE], rows[PAGE_SIZE - 1]["pk"]
    elif len(ids) == SCAN_LIMIT:
        next_cursor = ids[-1]  # more live tasks lie beyond what this request read
    else:
        next_cursor = None
    partial = len(ids) == SCAN_LIMIT and len(rows) < PAGE_SIZE
    return {
        "unique_keys": [
            {
                "id": row["pk"],
                "key": row["unique_key"],
                "status": row["status"],
                "task_type": row["task_type"],
                "owner": row["owner"],
                "queue": row["queue"],
                "created_at": row["created_at"].isoformat(),
                "admin_url": reverse("admin:tasks_taskqueue_change", args=[row["pk"]]),
            }
            for row in rows
        ],
        "next": next_cursor,
        "scanned": len(ids),
        "partial": partial,
    }


def keys_data(before: str = "") -> dict[str, Any]:
    """The Keys page's feed: the concurrency keys at their limit and a page of live unique keys."""
    return {
        "concurrency": keys_at_limit(),
        **live_unique_keys(before),
        "generated_at": timezone.now().isoformat(),
    }


def _labels() -> dict[str, str]:
    return {
        "refresh_ok": _("live"),
        "refresh_failed": _("could not refresh; retrying"),
        "no_full_keys": _("No concurrency key is at its limit."),
        "no_per_key_queues": _("No queue has a per-key concurrency limit."),
        "no_unique_keys": _("No live task holds a unique key."),
        "partial": _("Read %(scanned)d live tasks from the cursor; older ones may hold keys too: use More."),
        "more": _("More"),
    }


@staff_only
@require_GET
def keys_page(request: HttpRequest) -> HttpResponse:
    response = _page(request, "admin/taskhub/console_keys.html", _("Keys"), keys_data())
    response.context_data["labels"] = _labels()
    return response


@staff_only
@require_GET
def keys_json(request: HttpRequest) -> JsonResponse:
    try:
        return JsonResponse(keys_data(request.GET.get("before", "")))
    except CursorInvalid:
        return error_response(400, "invalid_cursor", _("before must be a task id."), field="before")
