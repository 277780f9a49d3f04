"""Fast bulk loader: fills `task_queue` and its counter tables for the statistics-at-scale runs.

Rows are spread over statuses, queues, users and ~90 days and written with multi-row INSERTs.
The counters (`task_status_count`, `task_hourly_stats`) are accumulated while generating, with
the same rules as `tasks.counters.rebuild()`, and inserted in bulk: `rebuild()` itself issues
one statement per counter row, far too slow for a million tasks.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from bench.config import STAFF_NAME, USER_NAME
from tasks import counters
from tasks.models import FINISHED_STATUSES, QueueConfig, TaskHourlyStats, TaskQueue, TaskStatus, TaskStatusCount

QUEUES = {"default": 0.5, "emails": 0.2, "reports": 0.2, "media": 0.1}
# Plain strings (not the enum) because rows go to the driver without Django's value preparation.
STATUSES = {
    TaskStatus.SUCCEEDED.value: 0.88,
    TaskStatus.FAILED.value: 0.06,
    TaskStatus.CANCELLED.value: 0.03,
    TaskStatus.PENDING.value: 0.02,  # scheduled in the future, so workers leave them alone
    TaskStatus.RUNNING.value: 0.01,  # leases far ahead, so lease recovery leaves them alone
}
CHUNK = 5000
TASK_COLUMNS = (
    "owner_id",
    "queue_id",
    "task_type",
    "payload",
    "priority",
    "status",
    "attempts",
    "max_attempts",
    "run_at",
    "claimed_by",
    "lease_expires_at",
    "progress",
    "progress_message",
    "result",
    "error",
    "cancel_requested",
    "created_at",
    "started_at",
    "finished_at",
)
HOURLY = counters.HOURLY_EVENT_COLUMNS
SLOT = {column: index for index, column in enumerate(HOURLY)}


def ensure_users(count: int, *, password: str) -> dict:
    """Create `count` bench users and a staff user (idempotent).

    The first user and the staff user get `password` (this run's), even when they already exist
    in a kept data set; the others cannot log in.
    """
    users = get_user_model()
    names = [USER_NAME.format(i) for i in range(max(count, 1))]
    can_log_in = {names[0], STAFF_NAME}
    existing = {u.username: u for u in users.objects.filter(username__in=[*names, STAFF_NAME])}
    for name in [*names, STAFF_NAME]:
        user = existing.get(name) or users(username=name, is_staff=name == STAFF_NAME)
        if name in can_log_in and password:
            user.set_password(password)
        elif user.pk is not None:
            continue
        else:
            user.set_unusable_password()
        user.save()
    owner_ids = list(users.objects.filter(username__in=names).order_by("username").values_list("pk", flat=True))
    return {"owner_ids": owner_ids, "user": names[0], "staff": STAFF_NAME}


def ensure_queues() -> list[int]:
    """Return the ids of the bench queues, creating the missing ones."""
    return [QueueConfig.objects.get_or_create(name=name)[0].pk for name in QUEUES]


def load(rows: int, *, owner_ids: Sequence[int], days: int = 90, seed: int = 1, now: datetime | None = None) -> dict:
    """Insert `rows` tasks and their counters into empty tables; return timings and counts."""
    if TaskQueue.objects.exists() or TaskStatusCount.objects.exists() or TaskHourlyStats.objects.exists():
        raise RuntimeError("load() fills empty tables only: task_queue or its counters already hold rows")
    if not owner_ids:
        raise ValueError("load() needs at least one owner")
    started = time.perf_counter()
    rng = random.Random(seed)
    now = now or timezone.now()
    queue_ids = ensure_queues()
    statuses: dict[tuple[int, int, str], int] = defaultdict(int)
    hourly: dict[tuple[int, datetime, int], list[float]] = {}
    generated = _generate(rng, rows, owner_ids, queue_ids, days, now)
    with _bulk_session():
        for chunk in _chunks(generated, CHUNK):
            params = []
            for row in chunk:
                _count(row, statuses, hourly)
                params.append(_adapt(row))
            with transaction.atomic():
                _insert("task_queue", TASK_COLUMNS, params)
        inserted = time.perf_counter()
        with transaction.atomic():
            _insert_counters(statuses, hourly)
    done = time.perf_counter()
    return {
        "rows": rows,
        "insert_seconds": inserted - started,
        "counters_seconds": done - inserted,
        "total_seconds": done - started,
        "status_count_rows": len(statuses),
        "hourly_rows": len(hourly),
    }


def add_pending(rows: int, *, username: str, queue_name: str = "default") -> dict:
    """Add `rows` runnable echo tasks for `username`, counted as created; return their id range."""
    owner = get_user_model().objects.get(username=username)
    queue, _ = QueueConfig.objects.get_or_create(name=queue_name)
    before = TaskQueue.objects.aggregate(top=Max("id"))["top"] or 0
    started = time.perf_counter()
    now = timezone.now()
    for start in range(0, rows, CHUNK):
        tasks = [
            TaskQueue(owner=owner, queue=queue, task_type="echo", payload={"n": i}, created_at=now, run_at=now)
            for i in range(start, min(start + CHUNK, rows))
        ]
        with transaction.atomic():
            TaskQueue.objects.bulk_create(tasks)
            counters.record_created(tasks)
    after = TaskQueue.objects.aggregate(top=Max("id"))["top"] or 0
    return {"count": rows, "first_id": before + 1, "last_id": after, "seconds": time.perf_counter() - started}


def _generate(
    rng: random.Random, rows: int, owner_ids: Sequence[int], queue_ids: Sequence[int], days: int, now: datetime
) -> Iterator[dict]:
    """Yield task rows in creation order (ids grow with time, as in production)."""
    span = timedelta(days=days).total_seconds()
    first = now - timedelta(days=days)
    queue_cum = list(itertools.accumulate(QUEUES.values()))
    status_names, status_cum = list(STATUSES), list(itertools.accumulate(STATUSES.values()))
    for i in range(rows):
        status = rng.choices(status_names, cum_weights=status_cum)[0]
        # Kept a minute back from now so created + wait + run is never in the future.
        created = first + timedelta(seconds=span * i / max(rows, 1) - 60)
        if status == TaskStatus.RUNNING:
            created = now - timedelta(seconds=rng.uniform(60, 3600))
        wait = min(rng.expovariate(0.5), 25.0)
        run = min(rng.expovariate(2.0), 25.0)
        started = created + timedelta(seconds=wait)
        row = {
            "owner_id": rng.choice(owner_ids),
            "queue_id": rng.choices(queue_ids, cum_weights=queue_cum)[0],
            "status": status,
            "created_at": created,
            "run_at": created,
            "started_at": None,
            "finished_at": None,
            "lease_expires_at": None,
            "claimed_by": "",
            "attempts": 0,
            "task_type": "echo",
            "result": None,
            "error": "",
            "progress": 0,
            "cancel_requested": False,
            "payload": json.dumps({"n": i}),
        }
        if status == TaskStatus.PENDING:
            row["run_at"] = now + timedelta(days=rng.uniform(1, 30))
        elif status == TaskStatus.RUNNING:
            row.update(started_at=started, lease_expires_at=now + timedelta(days=7), claimed_by="bench-ghost")
            row.update(attempts=1, progress=50)
        elif status == TaskStatus.CANCELLED:
            row.update(finished_at=created + timedelta(seconds=wait), cancel_requested=True)
        else:
            row.update(started_at=started, finished_at=started + timedelta(seconds=run), attempts=1, progress=100)
            if status == TaskStatus.FAILED:
                row.update(task_type="fail", error="TaskFailure: failed on purpose", attempts=3)
            else:
                row["result"] = row["payload"]
        yield row


def _count(row: dict, statuses: dict, hourly: dict) -> None:
    """Accumulate one row into the counters, as `tasks.counters.rebuild()` would."""
    owner, queue, status = row["owner_id"], row["queue_id"], row["status"]
    _hour_values(hourly, owner, row["created_at"], queue)[SLOT["created"]] += 1
    finished = row["finished_at"]
    if status not in FINISHED_STATUSES or finished is None:
        return
    statuses[(owner, queue, status)] += 1
    values = _hour_values(hourly, owner, finished, queue)
    values[SLOT[status]] += 1
    if row["started_at"] is not None:
        values[SLOT["started"]] += 1
        values[SLOT["wait_seconds_sum"]] += max((row["started_at"] - row["created_at"]).total_seconds(), 0.0)
        values[SLOT["run_seconds_sum"]] += max((finished - row["started_at"]).total_seconds(), 0.0)


def _hour_values(hourly: dict, owner: int, moment: datetime, queue: int) -> list[float]:
    key = (owner, counters.hour_of(moment), queue)
    values = hourly.get(key)
    if values is None:
        values = hourly[key] = [0] * len(HOURLY)
    return values


def _adapt(row: dict) -> tuple:
    adapt = connection.ops.adapt_datetimefield_value
    values = dict(row, priority=0, max_attempts=3, progress_message="")
    for column in ("run_at", "lease_expires_at", "created_at", "started_at", "finished_at"):
        values[column] = adapt(values[column])
    return tuple(values[column] for column in TASK_COLUMNS)


def _insert_counters(statuses: dict, hourly: dict) -> None:
    adapt = connection.ops.adapt_datetimefield_value
    status_rows = [(o, q, s, n) for (o, q, s), n in sorted(statuses.items())]
    hourly_rows = [(o, q, adapt(h), *values) for (o, h, q), values in sorted(hourly.items())]
    for chunk in _chunks(iter(status_rows), CHUNK):
        _insert("task_status_count", ("owner_id", "queue_id", "status", "count"), chunk)
    for chunk in _chunks(iter(hourly_rows), CHUNK):
        _insert("task_hourly_stats", ("owner_id", "queue_id", "hour", *HOURLY), chunk)


def _insert(table: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    # executemany of one INSERT … VALUES becomes multi-row INSERTs in mysqlclient.
    marks = ", ".join(["%s"] * len(columns))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _bulk_session:
    """On MySQL, skip per-row unique and foreign-key checks while loading generated (valid) rows."""

    def __enter__(self) -> None:
        if connection.vendor == "mysql":
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")

    def __exit__(self, *exc: object) -> None:
        if connection.vendor == "mysql":
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION unique_checks = 1, foreign_key_checks = 1")
