"""The `raw_task_sql` shortcut: hand-written SQL where the ORM's statement costs more Python than the database spends.

Four statements on the per-task paths: the INSERT of one enqueued task, the read of the queues an
enqueue names, the UPDATE that marks a claimed batch running and the CASE WHEN UPDATE that records
a batch of successes. Each does exactly what its plain ORM version in `tasks.transitions` (or
`tasks.services` for the read) does, leaving identical rows (tasks/tests/test_transitions.py runs
both). The writes are called only by `tasks.transitions`, which stays the one owner of every task
transition: guards and counters are its business, not this module's.

It leans on field internals the ORM normally drives (`pre_save`, `get_db_prep_save`,
`Model._state`, `Model.from_db`, `ops.last_insert_id`) and on the backends' SQL dialect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connection

from core.db.clock import SQL_NOW_PLUS, sql_seconds
from tasks.models import QueueConfig, TaskQueue


def insert_one(task: TaskQueue) -> None:
    """INSERT one task in a single statement and set its id; each field prepares its own value, as the ORM would."""
    meta = TaskQueue._meta
    # A generated column (active_unique_key) is the database's to write.
    fields = [f for f in meta.concrete_fields if not f.primary_key and not f.generated]
    values = [f.get_db_prep_save(f.pre_save(task, True), connection) for f in fields]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})", values)
        task.pk = connection.ops.last_insert_id(cursor, meta.db_table, meta.pk.column)
    task._state.adding = False
    task._state.db = connection.alias


def mark_running(
    pks: Sequence[int], *, worker_id: str, now: datetime, lease_seconds: int, lease_from: datetime | None = None
) -> None:
    """pending → running for rows the caller's transaction has locked: one more attempt, under a lease.

    The lease ends `lease_seconds` after the database's clock (`core.db.clock`), or after
    `lease_from` when the caller fixes the time.
    """
    adapt = connection.ops.adapt_datetimefield_value
    placeholders = ", ".join(["%s"] * len(pks))
    if lease_from is None:
        lease_sql, lease_param = SQL_NOW_PLUS[connection.vendor], sql_seconds(connection.vendor, lease_seconds)
    else:
        lease_sql, lease_param = "%s", adapt(lease_from + timedelta(seconds=lease_seconds))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE task_queue SET status = 'running', attempts = attempts + 1, "
            f"claimed_by = %s, lease_expires_at = {lease_sql}, started_at = %s WHERE id IN ({placeholders})",
            [worker_id, lease_param, adapt(now), *pks],
        )


def succeed(worker_id: str, results: dict[int, Any], attempts: dict[int, int], now: datetime) -> int:
    """running → succeeded for the tasks `worker_id` still holds at the given attempts, in one UPDATE.

    Return how many changed (the MySQL backend counts matched rows). `results` maps pk to result.
    """
    cases = " ".join(["WHEN %s THEN %s"] * len(results))
    params: list[Any] = ["succeeded", connection.ops.adapt_datetimefield_value(now)]
    for pk, value in results.items():
        params += [pk, None if value is None else json.dumps(value)]
    params += [*results, worker_id]
    for pk in results:
        params += [pk, attempts[pk]]
    placeholders = ", ".join(["%s"] * len(results))
    sql = (
        "UPDATE task_queue SET status = %s, progress = 100, error = '', finished_at = %s, "
        f"lease_expires_at = NULL, result = CASE id {cases} END "
        f"WHERE id IN ({placeholders}) AND status = 'running' AND claimed_by = %s "
        f"AND attempts = CASE id {cases} END"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def queues_named(names: set[str], fields: Sequence[str]) -> dict[str, QueueConfig]:
    """Return the queues with these names, loading only `fields` (the rest loads on access)."""
    marks = ", ".join(["%s"] * len(names))
    with connection.cursor() as cursor:
        table = QueueConfig._meta.db_table
        cursor.execute(f"SELECT {', '.join(fields)} FROM {table} WHERE name IN ({marks})", sorted(names))
        rows = cursor.fetchall()
    queues = (QueueConfig.from_db(connection.alias, fields, row) for row in rows)
    return {queue.name: queue for queue in queues}
