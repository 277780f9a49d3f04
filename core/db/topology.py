"""Is the database behind this connection one where SKIP LOCKED claims really exclude each other?

A version number is not enough. TiDB answers as "MySQL 8.0.11" and accepts SKIP LOCKED, yet does
not skip rows another transaction locked (pingcap/tidb#69720). A proxy (ProxySQL, Vitess) that
sends locking reads to a replica lets two workers lock "the same" row on two servers. A claim
query the optimizer runs as a full scan or a filesort locks every row it reads, so one worker
takes all pending rows and the others find nothing. Each of these is checked here against the
live server: the worker does it before its first claim and `check_production` reports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

# The row both probe connections reach for: Django's migration record has rows wherever the
# schema exists (InnoDB, as every table: check_production checks), and only `migrate` writes it.
PROBE_TABLE = "django_migrations"
# Seconds a probe connection may wait for a lock it did not expect to meet (SKIP LOCKED never waits).
PROBE_LOCK_WAIT_SECONDS = 2
PROBE_REMEDY = (
    "Connect workers straight to the primary, or make the proxy send every SELECT ... FOR UPDATE and every "
    "statement inside a transaction to the writer (docs/SCALING.md)."
)
PLAN_REMEDY = (
    "a locking read locks every row it reads, so one worker would take every pending row; run manage.py "
    "migrate (task_claim_idx) and ANALYZE TABLE task_queue."
)
# EXPLAIN access types that read a whole table or a whole index.
FULL_SCANS = frozenset({"ALL", "index"})


@dataclass(frozen=True)
class ProbeResult:
    """The two-connection lock probe's verdict: `problem` refuses workers, `doubt` only warns."""

    problem: str | None = None
    doubt: str | None = None
    row_id: int | None = None


def is_read_only(connection: BaseDatabaseWrapper) -> bool:
    """Return whether the server refuses ordinary writes (`@@read_only`): a replica, or a demoted primary."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@global.read_only")
        (value,) = cursor.fetchone()
    return bool(int(value))


def lock_probe(holder: BaseDatabaseWrapper, other: BaseDatabaseWrapper) -> ProbeResult:
    """Lock a row on `holder` with FOR UPDATE SKIP LOCKED and check that `other` cannot lock it too.

    1. `holder` opens a transaction and locks the first probe row it can (SKIP LOCKED).
    2. Inside that transaction it asks `@@read_only`: a locking read answered by a read-only
       server was routed to a replica.
    3. `other` (its own connection, as a second worker has) reads the row plainly: it must exist
       there, or the two connections do not see the same database.
    4. `other` tries to lock it with SKIP LOCKED: getting it means the two locks were taken on
       different servers (or the server ignores them), and two workers could claim one task.
    5. Both roll back: nothing is written, and the row is held for milliseconds.
    """
    holder.set_autocommit(False)
    other.set_autocommit(False)
    try:
        _short_lock_wait(holder)
        _short_lock_wait(other)
        with holder.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {PROBE_TABLE} ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
            row = cursor.fetchone()
            if row is None:
                return ProbeResult(doubt=f"the lock probe found no unlocked {PROBE_TABLE} row to lock (run migrate)")
            row_id = int(row[0])
            cursor.execute("SELECT @@global.read_only")
            (read_only,) = cursor.fetchone()
        if int(read_only):
            return ProbeResult(
                problem="a SELECT ... FOR UPDATE was answered by a read-only server: locking reads are routed to a "
                "replica, where they exclude nothing on the primary",
                row_id=row_id,
            )
        with other.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {PROBE_TABLE} WHERE id = %s", [row_id])
            if cursor.fetchone() is None:
                return ProbeResult(
                    doubt=f"a second connection does not see {PROBE_TABLE} row {row_id} that the first one locked: "
                    "the two connections reach different databases (a lagging replica?)",
                    row_id=row_id,
                )
            cursor.execute(f"SELECT id FROM {PROBE_TABLE} WHERE id = %s FOR UPDATE SKIP LOCKED", [row_id])
            taken = cursor.fetchone() is not None
        if taken:
            return ProbeResult(
                problem=f"a second connection locked {PROBE_TABLE} row {row_id} with FOR UPDATE SKIP LOCKED while "
                "the first one held it: the two locking reads reached different servers (a proxy routing them "
                "to a replica) or the server ignores the lock, so two workers could claim the same task",
                row_id=row_id,
            )
        return ProbeResult(row_id=row_id)
    finally:
        for conn in (other, holder):
            conn.rollback()
            conn.set_autocommit(True)


def probe_connections(alias: str, connections: Any) -> ProbeResult:
    """Run the lock probe on two new connections to `alias`, as two workers would have."""
    holder = connections.create_connection(alias)
    other = connections.create_connection(alias)
    try:
        return lock_probe(holder, other)
    finally:
        other.close()
        holder.close()


def plan_problem(connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any], *, table: str) -> str | None:
    """EXPLAIN a locking read and return why it would lock more rows than it returns, or None.

    A full table or index scan, or a filesort, under FOR UPDATE locks every row it reads before
    LIMIT applies: the first worker takes every pending row and the others find nothing.
    """
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, list(params))
        columns = [column[0].lower() for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    steps = [row for row in rows if row.get("table") == table]
    if not steps:
        return None
    for step in steps:
        extra = str(step.get("extra") or "")
        if "filesort" in extra.lower():
            return f"the claim query on {table} sorts its rows (Using filesort; key {step.get('key')})"
        if step.get("type") in FULL_SCANS or not step.get("key"):
            return f"the claim query reads all of {table} (access type {step.get('type')}, key {step.get('key')})"
    return None


def _short_lock_wait(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {PROBE_LOCK_WAIT_SECONDS}")
