"""The console's Workers and Stuck panels: who runs what, "drain this worker", and what is stuck.

Staff only (`console.staff_only`: 403 `staff_only` for anyone else); the drain is a POST with CSRF
and needs the "change worker" permission. Every read is bounded whatever the size of `task_queue`:

- workers: `task_worker` (one row per live worker, a small table), at most WORKERS_LIMIT rows;
  what they hold: the running tasks claimed by them, through an index that leads with `status`
  (the live set, at most RUNNING_LIMIT rows) — no index on `claimed_by`, which every claim and
  finish would have to write;
- running tasks past their lease: task_lease_idx (status, lease_expires_at), oldest first, LIMIT;
- silent workers: the index on `last_heartbeat_at`, oldest first, LIMIT;
- pending far beyond their queue's usual wait: MIN(run_at) of the runnable pending tasks per
  queue in one covering read of task_claim_idx (the pending live set), against the median of each
  unpaused queue's hourly mean waits over the last 24 h (`task_hourly_stats`, by its hour index).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from tasks.console import _page, error_response, staff_only
from tasks.models import (
    BulkAction,
    BulkActionKind,
    BulkActionState,
    QueueConfig,
    TaskHourlyStats,
    TaskQueue,
    TaskStatus,
    WorkerProcess,
)

DRAIN_PERMISSION = "tasks.change_workerprocess"
WORKERS_LIMIT = 200
RUNNING_LIMIT = 2000
STUCK_LIMIT = 50
QUEUES_LIMIT = 200
# "Pending far beyond the usual wait": the oldest runnable task of a queue waited longer than
# WAIT_FACTOR x the median of the queue's hourly mean waits over the last WAIT_HISTORY_HOURS,
# and never less than WAIT_FLOOR_SECONDS (a queue whose tasks usually start at once, or that has
# no history, is flagged once its oldest runnable task waited that long).
WAIT_FACTOR = 10
WAIT_FLOOR_SECONDS = 300
WAIT_HISTORY_HOURS = 24


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _age(now: datetime, moment: datetime | None) -> float | None:
    return None if moment is None else round(max((now - moment).total_seconds(), 0.0), 1)


def _stale_before(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.TASKHUB_WORKER_STALE_SECONDS)


def _labels() -> dict[str, str]:
    return {
        "refresh_ok": _("live"),
        "refresh_failed": _("could not refresh; retrying"),
        "no_workers": _("No workers."),
        "no_leases": _("No running task is past its lease."),
        "no_silent": _("No silent worker."),
        "no_waiting": _("No queue is waiting far beyond its usual wait."),
        "drain": _("Drain"),
        "draining": _("draining"),
        "stale": _("stale"),
        "all_queues": _("all"),
        "drain_confirm": _("Drain worker %(worker)s? It finishes what it holds, claims nothing more and exits."),
    }


# --- Workers -----------------------------------------------------------------------------------


def _held_by(worker_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The running tasks each of these workers holds (id, type), read from the live set only."""
    held: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not worker_ids:
        return held
    rows = (
        TaskQueue.objects.filter(status=TaskStatus.RUNNING, claimed_by__in=worker_ids)
        .order_by()
        .values_list("pk", "task_type", "claimed_by")[:RUNNING_LIMIT]
    )
    for pk, task_type, claimed_by in rows:
        held[claimed_by].append({"id": pk, "task_type": task_type})
    for tasks in held.values():
        tasks.sort(key=lambda task: task["id"])
    return held


def _worker_row(worker: WorkerProcess, now: datetime, held: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": worker.pk,
        "worker_id": worker.worker_id,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "queues": worker.queues,
        "concurrency": worker.concurrency,
        "tasks_processed": worker.tasks_processed,
        "current": held,
        "memory_rss_bytes": worker.memory_rss_bytes,
        "started_at": _iso(worker.started_at),
        "last_heartbeat_at": _iso(worker.last_heartbeat_at),
        "heartbeat_age_seconds": _age(now, worker.last_heartbeat_at),
        "stale": worker.last_heartbeat_at < _stale_before(now),
        "drain_requested_at": _iso(worker.drain_requested_at),
        "drain_url": reverse("taskhub-console-worker-drain", args=[worker.pk]),
    }


def workers_data() -> dict[str, Any]:
    """Every registered worker (at most WORKERS_LIMIT), by host and pid, with the tasks it holds."""
    now = timezone.now()
    workers = list(WorkerProcess.objects.order_by("hostname", "pid", "pk")[: WORKERS_LIMIT + 1])
    more = len(workers) > WORKERS_LIMIT
    workers = workers[:WORKERS_LIMIT]
    held = _held_by([worker.worker_id for worker in workers])
    return {
        "workers": [_worker_row(worker, now, held.get(worker.worker_id, [])) for worker in workers],
        "truncated": more,
        "stale_seconds": settings.TASKHUB_WORKER_STALE_SECONDS,
        "heartbeat_seconds": settings.TASKHUB_WORKER_HEARTBEAT_SECONDS,
        "generated_at": now.isoformat(),
    }


@staff_only
@require_GET
def workers_page(request: HttpRequest) -> HttpResponse:
    return _panel(request, "admin/taskhub/console_workers.html", _("Workers"), workers_data())


@staff_only
@require_GET
def workers_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(workers_data())


def worker_drain_request(worker_pk: int, *, by: Any) -> tuple[WorkerProcess | None, bool]:
    """Flag a worker's row for draining and record it in the bulk-action audit list, in one transaction.

    Return (the worker or None if it is gone, True if this call set the flag). A second request
    for a worker already draining changes nothing and records nothing.
    """
    now = timezone.now()
    with transaction.atomic():
        worker = WorkerProcess.objects.select_for_update().filter(pk=worker_pk).first()
        if worker is None:
            return None, False
        if worker.drain_requested_at is not None:
            return worker, False
        worker.drain_requested_at = now
        worker.save(update_fields=["drain_requested_at"])
        BulkAction.objects.create(
            action=BulkActionKind.DRAIN,
            filters={"worker": worker.worker_id},
            params={"hostname": worker.hostname, "pid": worker.pid},
            state=BulkActionState.DONE,
            created_by=by,
            created_at=now,
            updated_at=now,
            finished_at=now,
        )
    return worker, True


@staff_only
@require_POST
def worker_drain(request: HttpRequest, pk: int) -> JsonResponse:
    """POST: ask a worker to drain (202); 403 `permission_denied`, 404 `unknown_worker`."""
    if not request.user.has_perm(DRAIN_PERMISSION):
        return error_response(403, "permission_denied", _("You may not drain workers."))
    worker, requested = worker_drain_request(pk, by=request.user)
    if worker is None:
        return error_response(404, "unknown_worker", _("No such worker (it may have exited)."), field="worker")
    message = (
        _("Worker %(worker)s will drain: it finishes what it holds, claims nothing more and exits.")
        if requested
        else _("Worker %(worker)s is already draining.")
    )
    return JsonResponse(
        {"worker": worker.worker_id, "requested": requested, "message": message % {"worker": worker.worker_id}},
        status=202,
    )


# --- Stuck -------------------------------------------------------------------------------------


def _past_lease(now: datetime) -> list[dict[str, Any]]:
    rows = (
        TaskQueue.objects.filter(status=TaskStatus.RUNNING, lease_expires_at__lt=now)
        .order_by("lease_expires_at")
        .values("pk", "task_type", "queue_id", "claimed_by", "attempts", "started_at", "lease_expires_at")[:STUCK_LIMIT]
    )
    return [
        {
            "id": row["pk"],
            "task_type": row["task_type"],
            "queue_id": row["queue_id"],
            "claimed_by": row["claimed_by"],
            "attempts": row["attempts"],
            "started_at": _iso(row["started_at"]),
            "lease_expires_at": _iso(row["lease_expires_at"]),
            "overdue_seconds": _age(now, row["lease_expires_at"]),
        }
        for row in rows
    ]


def _silent_workers(now: datetime) -> list[dict[str, Any]]:
    rows = WorkerProcess.objects.filter(last_heartbeat_at__lt=_stale_before(now)).order_by("last_heartbeat_at")
    return [
        {
            "id": worker.pk,
            "worker_id": worker.worker_id,
            "hostname": worker.hostname,
            "pid": worker.pid,
            "last_heartbeat_at": _iso(worker.last_heartbeat_at),
            "silent_seconds": _age(now, worker.last_heartbeat_at),
        }
        for worker in rows[:STUCK_LIMIT]
    ]


def usual_waits(now: datetime) -> dict[int, float]:
    """Per queue: the median of its hourly mean waits (created → started) over the last WAIT_HISTORY_HOURS."""
    since = now - timedelta(hours=WAIT_HISTORY_HOURS)
    hours = (
        TaskHourlyStats.objects.filter(hour__gte=since, started__gt=0)
        .values("queue_id", "hour")
        .annotate(started=Sum("started"), waited=Sum("wait_seconds_sum"))
        .order_by()
    )
    means: dict[int, list[float]] = defaultdict(list)
    for row in hours:
        if row["started"]:
            means[row["queue_id"]].append(row["waited"] / row["started"])
    return {queue_id: statistics.median(values) for queue_id, values in means.items()}


def oldest_runnable(now: datetime) -> dict[int, datetime]:
    """Per queue, MIN(run_at) of its pending tasks due now, in one read of task_claim_idx's own entries (no task row)."""
    rows = (
        TaskQueue.objects.filter(status=TaskStatus.PENDING, run_at__lte=now)
        .values("queue_id")
        .annotate(oldest=Min("run_at"))
        .order_by()
    )
    return {row["queue_id"]: row["oldest"] for row in rows}


def _waiting_too_long(now: datetime) -> list[dict[str, Any]]:
    oldest_by_queue = oldest_runnable(now)
    if not oldest_by_queue:
        return []
    usual = usual_waits(now)
    queues = QueueConfig.objects.filter(pk__in=list(oldest_by_queue), is_paused=False).order_by("name")
    found = []
    for queue in queues[:QUEUES_LIMIT]:
        oldest = oldest_by_queue[queue.pk]
        waited = (now - oldest).total_seconds()
        typical = usual.get(queue.pk)
        limit = max(WAIT_FACTOR * typical, WAIT_FLOOR_SECONDS) if typical is not None else WAIT_FLOOR_SECONDS
        if waited > limit:
            found.append(
                {
                    "queue": queue.name,
                    "queue_id": queue.pk,
                    "oldest_runnable_since": _iso(oldest),
                    "waited_seconds": round(waited, 1),
                    "usual_wait_seconds": None if typical is None else round(typical, 1),
                    "limit_seconds": round(limit, 1),
                }
            )
    return found


def stuck_data() -> dict[str, Any]:
    now = timezone.now()
    return {
        "past_lease": _past_lease(now),
        "silent_workers": _silent_workers(now),
        "waiting": _waiting_too_long(now),
        "limit": STUCK_LIMIT,
        "stale_seconds": settings.TASKHUB_WORKER_STALE_SECONDS,
        "wait_factor": WAIT_FACTOR,
        "wait_floor_seconds": WAIT_FLOOR_SECONDS,
        "generated_at": now.isoformat(),
    }


@staff_only
@require_GET
def stuck_page(request: HttpRequest) -> HttpResponse:
    return _panel(request, "admin/taskhub/console_stuck.html", _("Stuck"), stuck_data())


@staff_only
@require_GET
def stuck_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(stuck_data())


def _panel(request: HttpRequest, template: str, title: str, data: dict[str, Any]) -> HttpResponse:
    response = _page(request, template, title, data)
    response.context_data["labels"] = _labels()
    return response
