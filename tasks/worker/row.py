"""This worker's row in `task_worker` (one per live worker process), kept fresh by heartbeats."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
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


def worker_heartbeat(*, worker_id: str, queues: Sequence[str], concurrency: int, tasks_processed: int) -> None:
    """Refresh this worker's row; re-create it if it was pruned while the worker was stalled."""
    updated = WorkerProcess.objects.filter(worker_id=worker_id).update(
        last_heartbeat_at=timezone.now(), tasks_processed=tasks_processed
    )
    if not updated:
        worker_register(worker_id=worker_id, queues=queues, concurrency=concurrency, tasks_processed=tasks_processed)


def worker_unregister(*, worker_id: str) -> None:
    """Delete this worker's row on a clean exit."""
    WorkerProcess.objects.filter(worker_id=worker_id).delete()


def workers_prune_stale(*, now: datetime | None = None) -> int:
    """Delete rows of workers silent for longer than TASKHUB_WORKER_STALE_SECONDS; return how many."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.TASKHUB_WORKER_STALE_SECONDS)
    deleted, _ = WorkerProcess.objects.filter(last_heartbeat_at__lt=cutoff).delete()
    return deleted
