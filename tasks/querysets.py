"""Task querysets: the reusable filters every reader and the worker share."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import connections, models
from django.db.models import Count
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from tasks.models import TaskQueue

# The order workers take tasks in: the trailing columns of task_claim_idx (InnoDB appends id).
CLAIM_ORDER = ("-priority", "run_at", "id")
# The locking claim on MySQL/MariaDB. FORCE INDEX because on a small table the optimizer
# prefers a full scan plus filesort, and a locking read locks every row it sorts: the first
# worker would lock all pending rows and the others, skipping them, would find nothing.
# Only what running a task needs: a previous attempt's error or a big result stays unread.
CLAIM_COLUMNS = (
    "id", "owner_id", "queue_id", "task_type", "payload", "priority", "status", "attempts", "max_attempts",
    "run_at", "cancel_requested", "created_at",
)  # fmt: skip
CLAIM_SQL_MYSQL = (
    f"SELECT {', '.join(CLAIM_COLUMNS)} FROM task_queue FORCE INDEX (task_claim_idx) "
    "WHERE status = 'pending' AND queue_id = %s AND run_at <= %s "
    "ORDER BY priority DESC, run_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
)


class TaskQuerySet(models.QuerySet):
    def visible_to(self, user: AbstractBaseUser) -> TaskQuerySet:
        """Return the tasks `user` may see: their own, or all for staff."""
        if getattr(user, "is_staff", False):
            return self
        return self.filter(owner=user)

    def owned_by(self, user: AbstractBaseUser) -> TaskQuerySet:
        """Return `user`'s own tasks."""
        return self.filter(owner=user)

    def pending(self) -> TaskQuerySet:
        return self.filter(status="pending")

    def running(self) -> TaskQuerySet:
        return self.filter(status="running")

    def active(self) -> TaskQuerySet:
        """Return tasks that are pending or running."""
        return self.filter(status__in=("pending", "running"))

    def runnable(self, now: datetime | None = None) -> TaskQuerySet:
        """Return pending tasks whose `run_at` has come."""
        return self.filter(status="pending", run_at__lte=now or timezone.now())

    def scheduled(self, now: datetime | None = None) -> TaskQuerySet:
        """Return pending tasks whose `run_at` is still in the future."""
        return self.filter(status="pending", run_at__gt=now or timezone.now())

    def insert_one(self, task: TaskQueue) -> TaskQueue:
        """INSERT one new task in a single statement and set its id; return it.

        The per-task enqueue path: for one row the ORM's insert costs several times the Python
        the database spends on it. Each field prepares its own value, as the ORM's insert would.
        """
        connection = connections[self.db]
        meta = self.model._meta
        fields = [field for field in meta.concrete_fields if not field.primary_key]
        values = [field.get_db_prep_save(field.pre_save(task, True), connection) for field in fields]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(field.column) for field in fields)
        marks = ", ".join(["%s"] * len(fields))
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})", values)
            task.pk = connection.ops.last_insert_id(cursor, meta.db_table, meta.pk.column)
        task._state.adding = False
        task._state.db = self.db
        return task

    # --- Claiming (the worker's SQL lives here and nowhere else) ---------------------------

    def claimable(self, queue_id: int, now: datetime) -> TaskQuerySet:
        """Return one queue's runnable tasks in claim order.

        Served by task_claim_idx (status, queue_id, priority DESC, run_at): equality on the
        first two columns and ORDER BY on the rest, so no filesort and, FOR UPDATE, no rows
        locked beyond the ones returned. One queue per query on purpose: `queue_id IN (...)`
        would sort the union of the queues and lock every row it read.
        """
        return self.runnable(now).filter(queue_id=queue_id).order_by(*CLAIM_ORDER)

    def lock_claimable(self, queue_id: int, now: datetime, limit: int) -> list[TaskQueue]:
        """Lock and return up to `limit` of one queue's runnable tasks in claim order, skipping
        rows another transaction holds; call inside a transaction."""
        connection = connections[self.db]
        if connection.vendor == "mysql":
            params = [queue_id, connection.ops.adapt_datetimefield_value(now), limit]
            return list(self.raw(CLAIM_SQL_MYSQL, params))
        # SQLite: the transaction (BEGIN IMMEDIATE) already excludes every other writer.
        return list(self.claimable(queue_id, now).only(*CLAIM_COLUMNS)[:limit])

    def claim_batch(
        self, *, worker_id: str, budgets: dict[int, int], limit: int, now: datetime, lease_seconds: dict[int, int]
    ) -> tuple[list[TaskQueue], set[int]]:
        """Take up to `limit` runnable tasks, at most `budgets[q]` from queue q; inside a transaction.

        Return them, and the queues searched that had nothing to take.

        1. Lock candidates per queue with SKIP LOCKED: rows another worker is claiming are
           passed over, never waited for. The SELECT reads task_queue alone (no join), so no
           queue_config row is locked by it.
        2. Keep the best `limit` across queues (the rest unlock at commit, a moment later).
        3. Mark them running in one UPDATE per queue (the lease differs per queue).
        """
        candidates: list[TaskQueue] = []
        empty: set[int] = set()
        for queue_id, budget in budgets.items():
            if budget > 0:
                found = self.lock_claimable(queue_id, now, min(budget, limit))
                candidates.extend(found)
                if not found:
                    empty.add(queue_id)
        candidates.sort(key=lambda task: (-task.priority, task.run_at, task.pk))
        chosen = candidates[:limit]
        by_queue: dict[int, list[TaskQueue]] = {}
        for task in chosen:
            by_queue.setdefault(task.queue_id, []).append(task)
        connection = connections[self.db]
        adapt = connection.ops.adapt_datetimefield_value
        for queue_id, tasks in by_queue.items():
            lease_expires_at = now + timedelta(seconds=lease_seconds[queue_id])
            placeholders = ", ".join(["%s"] * len(tasks))
            with connection.cursor() as cursor:
                # Raw: the ORM's UPDATE costs more Python than the database spends on it.
                cursor.execute(
                    f"UPDATE {self.model._meta.db_table} SET status = 'running', attempts = attempts + 1, "
                    f"claimed_by = %s, lease_expires_at = %s, started_at = %s WHERE id IN ({placeholders})",
                    [worker_id, adapt(lease_expires_at), adapt(now), *(task.pk for task in tasks)],
                )
            for task in tasks:
                task.mark_running(worker_id=worker_id, now=now, lease_expires_at=lease_expires_at, save=False)
        return chosen, empty

    def held_by(self, worker_id: str) -> TaskQuerySet:
        """Return the tasks `worker_id` is running under its claim."""
        return self.filter(status="running", claimed_by=worker_id)

    def lock_held(self, *, worker_id: str, attempts: dict[int, int]) -> set[int]:
        """Lock the given tasks (pk -> attempt) still held by that claim; return their pks."""
        rows = self.held_by(worker_id).filter(pk__in=list(attempts)).select_for_update()
        return {pk for pk, attempt in rows.values_list("pk", "attempts") if attempts[pk] == attempt}

    def succeed(self, *, worker_id: str, results: dict[int, Any], attempts: dict[int, int], now: datetime) -> int:
        """Mark tasks `worker_id` still holds succeeded in one UPDATE; return how many it changed.

        `results` maps pk to result, `attempts` pk to the attempt that ran: a task taken back and
        claimed again meanwhile (another attempt, even by this worker) is left alone. Raw SQL
        (ignoring this queryset's filters) because the ORM's CASE WHEN for a batch costs more
        Python than the database spends on the whole statement.
        """
        if not results:
            return 0
        connection = connections[self.db]
        table = self.model._meta.db_table
        cases = " ".join(["WHEN %s THEN %s"] * len(results))
        params: list[Any] = ["succeeded", connection.ops.adapt_datetimefield_value(now)]
        for pk, value in results.items():
            params += [pk, None if value is None else json.dumps(value)]
        params += [*results, worker_id]
        for pk in results:
            params += [pk, attempts[pk]]
        placeholders = ", ".join(["%s"] * len(results))
        sql = (
            f"UPDATE {table} SET status = %s, progress = 100, error = '', finished_at = %s, "
            f"lease_expires_at = NULL, result = CASE id {cases} END "
            f"WHERE id IN ({placeholders}) AND status = 'running' AND claimed_by = %s "
            f"AND attempts = CASE id {cases} END"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount

    def finished_at_by(self, *, worker_id: str, pks: list[int], now: datetime) -> set[int]:
        """Return which of `pks` `worker_id` finished at `now` (the moment of one recording batch)."""
        rows = self.filter(pk__in=pks, claimed_by=worker_id, finished_at=now).values_list("pk", flat=True)
        return set(rows)

    def running_counts(self, queue_ids: list[int]) -> dict[int, int]:
        """Return how many tasks run in each queue (the task_claim_idx prefix serves it)."""
        rows = self.filter(status="running", queue_id__in=queue_ids).values_list("queue_id").annotate(n=Count("id"))
        return dict(rows.order_by())

    def expired_leases(self, now: datetime) -> TaskQuerySet:
        """Return running tasks whose lease ran out, oldest first (served by task_lease_idx)."""
        return self.filter(status="running", lease_expires_at__lt=now).order_by("lease_expires_at")
