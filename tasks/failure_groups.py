"""Failure groups: tasks that failed for good, grouped by task type, exception class and message fingerprint.

The console lists groups from the small `task_failure_group` table, never by a GROUP BY over
`task_queue`. Only `tasks.transitions` calls the writing functions here, inside the transaction
of the change they follow:

- a task fails for good → its group's `count` + 1 and `last_seen` moved on, in one upsert per
  group (the group key is computed here, so the task's own UPDATE already carries it);
- a failed task is retried (it leaves the group: its `failure_group_id` is cleared), deleted or
  purged → `count` - 1.

So `count` is always "tasks of this group that are failed now"; `first_seen` and `last_seen` are
history. Rows are written in key order, so concurrent writers lock them in the same order.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from django.db import connection

from tasks.models import TaskQueue

FINGERPRINT_MAX_CHARS = 500
EXAMPLE_MAX_CHARS = 8000
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(
    r"\b(?:0x)?[0-9a-f]*\d[0-9a-f]*(?:[.,]\d+)*\b", re.I
)  # hex ids and addresses (with at least one digit)
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_SPACES = re.compile(r"\s+")


def headline(error: str) -> str:
    """Return the first line of a stored error ("Type: message"), without the traceback."""
    return error.strip().splitlines()[0] if error.strip() else ""


def fingerprint(error: str) -> str:
    """Return the error's first line with what varies between occurrences stripped.

    Quoted values, uuids, hex ids and numbers become placeholders, so "user 42 not found" and
    "user 7 not found" are one group.
    """
    text = headline(error)
    text = _QUOTED.sub("<v>", text)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<n>", text)
    text = _NUMBER.sub("<n>", text)
    return _SPACES.sub(" ", text).strip()[:FINGERPRINT_MAX_CHARS]


def group_key(task_type: str, exception: str, error: str) -> str:
    """Return the group key of a failure: sha1 of task type, exception class and fingerprint."""
    raw = "\x00".join((task_type, exception, fingerprint(error)))
    return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()


def record_failed(tasks: Iterable[TaskQueue], exceptions: dict[int, str], now: datetime) -> None:
    """Count tasks that just failed for good (their `failure_group_id` already written), one upsert per group.

    `exceptions` maps a task's pk to the class path of the exception that failed it.
    """
    groups: dict[str, list[TaskQueue]] = {}
    for task in tasks:
        groups.setdefault(task.failure_group_id, []).append(task)
    if not groups:
        return
    _require_transaction()
    with connection.cursor() as cursor:
        for key in sorted(groups):
            members = groups[key]
            first = members[0]
            _upsert(
                cursor,
                key=key,
                task_type=first.task_type,
                exception=exceptions.get(first.pk, ""),
                fingerprint=fingerprint(first.error),
                count=len(members),
                now=now,
                example_task_id=first.pk,
                example_error=first.error[:EXAMPLE_MAX_CHARS],
            )


def record_left(keys: Iterable[str | None]) -> None:
    """Uncount failed tasks that left their groups (retried, deleted, purged): one group key each."""
    counts = Counter(key for key in keys if key)
    if not counts:
        return
    _require_transaction()
    with connection.cursor() as cursor:
        for key in sorted(counts):
            cursor.execute("UPDATE task_failure_group SET count = count - %s WHERE `key` = %s", [counts[key], key])


def _require_transaction() -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("failure groups must change in the same transaction as the tasks they count")


def _upsert(cursor, *, key: str, count: int, now: datetime, **fields: object) -> None:
    at = connection.ops.adapt_datetimefield_value(now)
    columns = ["`key`", "count", "first_seen", "last_seen", *fields]
    params = [key, count, at, at, *fields.values()]
    placeholders = ", ".join(["%s"] * len(columns))
    insert = f"INSERT INTO task_failure_group ({', '.join(columns)}) VALUES ({placeholders})"
    if connection.vendor == "mysql":
        sql = f"{insert} ON DUPLICATE KEY UPDATE count = count + VALUES(count), last_seen = VALUES(last_seen)"
    else:
        sql = (
            f"{insert} ON CONFLICT (`key`) DO UPDATE SET count = count + excluded.count, last_seen = excluded.last_seen"
        )
    cursor.execute(sql, params)
