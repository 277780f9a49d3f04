"""Fast bulk loader: fills `task_queue` and its counter tables for the statistics-at-scale runs.

Rows come from `bench.dataset` (history spread over statuses, queues, users and ~90 days, plus
a live set of the same size at every table size) and are written with multi-row INSERTs.
The counters (`task_status_count`, `task_hourly_stats`, the minute rollup `task_minute_stats`) are
accumulated while generating, with the same rules as `tasks.counters.rebuild()`, and inserted in
bulk: `rebuild()` itself issues one statement per counter row, far too slow for a million tasks.
The hour rollup (`task_hour_stats`) is then rolled up from those minutes by `hour_stats.roll_up_hours`.
Failed rows get a failure group (`bench.dataset.failure`: 40 groups of very different sizes) and
the groups' rows in `task_failure_group`, as workers failing them would have written.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from bench import dataset
from bench.config import STAFF_NAME, USER_NAME
from tasks import counters, failure_groups, hour_stats
from tasks.models import FINISHED_STATUSES, QueueConfig, TaskHourlyStats, TaskQueue, TaskStatus, TaskStatusCount

CHUNK = 5000
TASK_COLUMNS = (
    "owner_id",
    "queue_id",
    "kind",
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
    "attempt_errors",
    "cancel_requested",
    "created_at",
    "started_at",
    "finished_at",
    "failure_group_id",
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
    return [QueueConfig.objects.get_or_create(name=name)[0].pk for name in dataset.QUEUES]


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
    minutes: dict = defaultdict(counters._MinuteDelta)
    groups: dict[str, dict] = {}
    since = counters.minute_stats_since(now)
    generated = dataset.generate(rng, rows, owner_ids, queue_ids, days, now)
    with _bulk_session():
        for chunk in _chunks(generated, CHUNK):
            params = []
            for row in chunk:
                _count(row, statuses, hourly, minutes, since)
                _group(row, groups)
                params.append(_adapt(row))
            with transaction.atomic():
                _insert("task_queue", TASK_COLUMNS, params)
        inserted = time.perf_counter()
        with transaction.atomic():
            _insert_counters(statuses, hourly, minutes, groups)
            hour_stats.roll_up_hours(now=now, max_hours=None)  # the hour rollup, from those minutes
    done = time.perf_counter()
    return {
        "rows": rows,
        "insert_seconds": inserted - started,
        "counters_seconds": done - inserted,
        "total_seconds": done - started,
        "status_count_rows": len(statuses),
        "hourly_rows": len(hourly),
    }


def add_failed(rows: int, *, username: str, queue_name: str) -> dict:
    """Add `rows` tasks of `username` that failed for good in `queue_name`, all of one failure group, counted.

    For a bulk retry to act on: the counters and the group are written as workers failing them
    would have (the tables must hold no counters yet). Return the group's key.
    """
    owner = get_user_model().objects.get(username=username)
    queue, _ = QueueConfig.objects.get_or_create(name=queue_name)
    if TaskStatusCount.objects.exists() or TaskHourlyStats.objects.exists():
        raise RuntimeError("add_failed() counts into empty counter tables only")
    started = time.perf_counter()
    now = timezone.now()
    rng = random.Random(3)
    statuses: dict[tuple[int, int, str], int] = defaultdict(int)
    hourly: dict[tuple[int, datetime, int], list[float]] = {}
    minutes: dict = defaultdict(counters._MinuteDelta)
    groups: dict[str, dict] = {}
    since = counters.minute_stats_since(now)
    exception, error = "builtins.TimeoutError", "TimeoutError: the partner API did not answer within 30 s"
    with _bulk_session():
        for start in range(0, rows, CHUNK):
            params = []
            for i in range(start, min(start + CHUNK, rows)):
                created = now - timedelta(seconds=rng.uniform(120, 7200))
                row = dataset.failed_row(rng, i, created, owner.pk, queue.pk, exception=exception, error=error)
                _count(row, statuses, hourly, minutes, since)
                _group(row, groups)
                params.append(_adapt(row))
            with transaction.atomic():
                _insert("task_queue", TASK_COLUMNS, params)
        with transaction.atomic():
            _insert_counters(statuses, hourly, minutes, groups)
            hour_stats.roll_up_hours(now=now, max_hours=None)  # the hour rollup, from those minutes
    (key,) = groups
    return {"rows": rows, "failure_group": key, "seconds": time.perf_counter() - started}


def add_pending(rows: int, *, username: str, queue_name: str = "default") -> dict:
    """Add `rows` runnable echo tasks for `username` (live: nothing to count); return their id range."""
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
        TaskQueue.objects.bulk_create(tasks)
    after = TaskQueue.objects.aggregate(top=Max("id"))["top"] or 0
    return {"count": rows, "first_id": before + 1, "last_id": after, "seconds": time.perf_counter() - started}


def add_live(rows: int, *, owner_ids: Sequence[int], seed: int = 2) -> dict:
    """Add `rows` live (scheduled or running) tasks to a loaded table (live: nothing to count)."""
    started = time.perf_counter()
    generated = dataset.live_rows(random.Random(seed), rows, owner_ids, ensure_queues())
    for chunk in _chunks(generated, CHUNK):
        with transaction.atomic():
            _insert("task_queue", TASK_COLUMNS, [_adapt(row) for row in chunk])
    live = TaskQueue.objects.filter(status__in=dataset.LIVE).count()
    return {"added": rows, "live": live, "seconds": time.perf_counter() - started}


def _count(row: dict, statuses: dict, hourly: dict, minutes: dict, since: datetime) -> None:
    """Accumulate one row into the counters and the minute rollup, as `tasks.counters.rebuild()` would."""
    owner, queue, status = row["owner_id"], row["queue_id"], row["status"]
    finished = row["finished_at"]
    if status not in FINISHED_STATUSES or finished is None:
        return
    statuses[(owner, queue, status)] += 1
    counters._count_minutes(minutes, queue, status, row["created_at"], row["started_at"], finished, since)
    _hour_values(hourly, owner, row["created_at"], queue)[SLOT["created"]] += 1
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


def _group(row: dict, groups: dict[str, dict]) -> None:
    """Give a failed row its failure group and count it there, as a worker failing it would."""
    if row["status"] != TaskStatus.FAILED:
        return
    key = row["failure_group_id"] = failure_groups.group_key(row["task_type"], row["exception"], row["error"])
    group = groups.get(key)
    if group is None:
        groups[key] = {
            "key": key,
            "task_type": row["task_type"],
            "exception": row["exception"],
            "fingerprint": failure_groups.fingerprint(row["error"]),
            "count": 1,
            "first_seen": row["finished_at"],
            "last_seen": row["finished_at"],
            "example_error": row["error"],
        }
    else:
        group["count"] += 1
        group["last_seen"] = max(group["last_seen"], row["finished_at"])


def _adapt(row: dict) -> tuple:
    adapt = connection.ops.adapt_datetimefield_value
    values = dict(row, kind="handler", priority=0, max_attempts=3, progress_message="", attempt_errors="[]")
    values.setdefault("failure_group_id", None)
    for column in ("run_at", "lease_expires_at", "created_at", "started_at", "finished_at"):
        values[column] = adapt(values[column])
    return tuple(values[column] for column in TASK_COLUMNS)


def _insert_counters(statuses: dict, hourly: dict, minutes: dict, groups: dict[str, dict]) -> None:
    adapt = connection.ops.adapt_datetimefield_value
    status_rows = [(o, q, s, n) for (o, q, s), n in sorted(statuses.items())]
    hourly_rows = [(o, q, adapt(h), *values) for (o, h, q), values in sorted(hourly.items())]
    minute_columns = counters.MINUTE_EVENT_COLUMNS
    minute_rows = [
        (q, adapt(m), *(delta.values[column] for column in minute_columns)) for (q, m), delta in sorted(minutes.items())
    ]
    group_columns = (
        "key",
        "task_type",
        "exception",
        "fingerprint",
        "count",
        "first_seen",
        "last_seen",
        "example_error",
    )
    group_rows = [
        tuple(adapt(g[c]) if c in ("first_seen", "last_seen") else g[c] for c in group_columns)
        for g in sorted(groups.values(), key=lambda g: g["key"])
    ]
    for chunk in _chunks(iter(status_rows), CHUNK):
        _insert("task_status_count", ("owner_id", "queue_id", "status", "count"), chunk)
    for chunk in _chunks(iter(hourly_rows), CHUNK):
        _insert("task_hourly_stats", ("owner_id", "queue_id", "hour", *HOURLY), chunk)
    for chunk in _chunks(iter(minute_rows), CHUNK):
        _insert("task_minute_stats", ("queue_id", "minute", *minute_columns), chunk)
    for chunk in _chunks(iter(group_rows), CHUNK):
        _insert("task_failure_group", group_columns, chunk)


def _insert(table: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    # executemany of one INSERT … VALUES becomes multi-row INSERTs in mysqlclient.
    marks = ", ".join(["%s"] * len(columns))
    names = ", ".join(connection.ops.quote_name(column) for column in columns)  # `key` is a reserved word
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


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
