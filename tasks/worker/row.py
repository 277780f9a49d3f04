"""This worker's row in `task_worker` (one per live worker process), kept fresh by heartbeats."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from accounts.fingerprint import key_fingerprint
from tasks.models import WorkerProcess


def new_worker_id() -> str:
    """Return a worker id unique across hosts and restarts: host:pid:random."""
    host = socket.gethostname()[:100]
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"


def worker_register(
    *, worker_id: str, queues: Sequence[str], concurrency: int, tasks_processed: int = 0
) -> WorkerProcess:
    """Insert this worker's row (with its JWT key fingerprint, so operators can compare keys)."""
    host, pid, _ = worker_id.rsplit(":", 2)
    return WorkerProcess.objects.create(
        worker_id=worker_id,
        hostname=host,
        pid=int(pid),
        queues=list(queues),
        concurrency=concurrency,
        key_fingerprint=key_fingerprint(settings.JWT_SECRET_KEY),
        tasks_processed=tasks_processed,
    )


def worker_heartbeat(
    *,
    worker_id: str,
    queues: Sequence[str],
    concurrency: int,
    tasks_processed: int,
    memory_rss_bytes: int | None = None,
    draining: bool = False,
) -> bool:
    """Refresh this worker's row; return True when a drain of this worker was requested.

    The heartbeat is how a worker learns of a drain, with no statement of its own: until it knows,
    its UPDATE matches its row only while `drain_requested_at` is NULL. No row matched (the MySQL
    backend counts matched rows, not changed ones) means "drain requested" or "row pruned while
    the worker was stalled": one read tells which, once. A draining worker beats unconditionally.
    A pruned row is re-created.
    """
    rows = WorkerProcess.objects.filter(worker_id=worker_id)
    values = {"last_heartbeat_at": timezone.now(), "tasks_processed": tasks_processed}
    if memory_rss_bytes is not None:
        values["memory_rss_bytes"] = memory_rss_bytes
    if not draining and rows.filter(drain_requested_at__isnull=True).update(**values):
        return False
    if not draining:
        draining = rows.filter(drain_requested_at__isnull=False).exists()
    if not (draining and rows.update(**values)):
        worker_register(worker_id=worker_id, queues=queues, concurrency=concurrency, tasks_processed=tasks_processed)
    return draining


def resident_bytes(pids: Iterable[int]) -> int | None:
    """Return the resident memory (RSS) of these processes summed, from /proc (None where there is no /proc)."""
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    total, seen = 0, False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
                total += int(statm.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue  # an exited child, or no /proc
        seen = True
    return total if seen else None


def worker_unregister(*, worker_id: str) -> None:
    """Delete this worker's row on a clean exit."""
    WorkerProcess.objects.filter(worker_id=worker_id).delete()


def workers_prune_stale(*, now: datetime | None = None) -> int:
    """Delete rows of workers silent for longer than TASKHUB_WORKER_STALE_SECONDS; return how many."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.TASKHUB_WORKER_STALE_SECONDS)
    deleted, _ = WorkerProcess.objects.filter(last_heartbeat_at__lt=cutoff).delete()
    return deleted
