"""The `raw_task_sql` shortcut: hand-written SQL where the ORM's statement costs more Python than the database spends.

Five statements on the per-task paths: the INSERT of one enqueued task, the multi-row INSERT of a
bulk enqueue, the read of the queues an enqueue names, the UPDATE that marks a claimed batch
running and the CASE WHEN UPDATE that records a batch of successes. Each does exactly what its plain ORM version in `tasks.transitions` (or
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

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field

from core.db.clock import SQL_NOW_PLUS, sql_seconds
from tasks.models import QueueConfig, TaskQueue


def insert_one(task: TaskQueue) -> None:
    """INSERT one task in a single statement and set its id; each field prepares its own value, as the ORM would."""
    conn = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: every field reaches it several times
    fields, sql = _insert_statement(conn)
    values = [f.get_db_prep_save(f.pre_save(task, True), conn) for f in fields]
    with conn.cursor() as cursor:
        cursor.execute(sql, values)
        task.pk = conn.ops.last_insert_id(cursor, TaskQueue._meta.db_table, TaskQueue._meta.pk.column)
    task._state.adding = False
    task._state.db = conn.alias


def insert_many(tasks: Sequence[TaskQueue], *, batch_size: int) -> None:
    """INSERT tasks in multi-row statements of `batch_size` rows, all or none; set their ids where the database returns them.

    Each field prepares its own value, as the ORM's `bulk_create` does, without its per-value
    compiler steps. Ids come back through `RETURNING` where the backend has it for multi-row
    INSERTs (MariaDB ≥ 10.5, SQLite ≥ 3.35); elsewhere (MySQL) they stay unset for the caller
    to read back, as after `bulk_create`.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    fields, single = _insert_statement(conn)
    head, row = single.split(" VALUES ")
    returning = conn.features.can_return_rows_from_bulk_insert
    batch_size = max(1, min(batch_size, conn.ops.bulk_batch_size(fields, tasks)))  # SQLite's parameter limit
    pk = conn.ops.quote_name(TaskQueue._meta.pk.column)
    with transaction.atomic(using=conn.alias, savepoint=False), conn.cursor() as cursor:
        for start in range(0, len(tasks), batch_size):
            batch = tasks[start : start + batch_size]
            values = [f.get_db_prep_save(f.pre_save(task, True), conn) for task in batch for f in fields]
            sql = f"{head} VALUES {', '.join([row] * len(batch))}" + (f" RETURNING {pk}" if returning else "")
            cursor.execute(sql, values)
            ids = [r[0] for r in cursor.fetchall()] if returning else [None] * len(batch)
            for task, pk_value in zip(batch, ids, strict=True):
                task.pk = pk_value
                task._state.adding = False
                task._state.db = conn.alias


_INSERTS: dict[str, tuple[list[Field], str]] = {}  # vendor -> (the fields written, the INSERT statement)


def _insert_statement(conn: BaseDatabaseWrapper) -> tuple[list[Field], str]:
    """Return the fields an INSERT of one task writes and its statement, built once per database vendor."""
    cached = _INSERTS.get(conn.vendor)
    if cached is None:
        meta = TaskQueue._meta
        # A generated column (active_unique_key) is the database's to write.
        fields = [f for f in meta.concrete_fields if not f.primary_key and not f.generated]
        quote = conn.ops.quote_name
        columns = ", ".join(quote(f.column) for f in fields)
        marks = ", ".join(["%s"] * len(fields))
        cached = _INSERTS[conn.vendor] = (fields, f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})")
    return cached


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
