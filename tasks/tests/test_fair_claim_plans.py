"""The fair and limited claim's queries at scale on MariaDB/MySQL: 1M tasks, 1,000 owners.

Every read is EXPLAINed (the index that matches its ORDER BY, no filesort) and run under
ANALYZE (how many rows it really read: a handful per owner, never the backlog).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import fair_claim, transitions
from tasks.models import QueueConfig, TaskQueue

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

TASKS = 1_000_000
OWNERS = 1_000
BIG_OWNER_PENDING = 100_000  # one owner's backlog: the reads must jump over it, not through it
ROWS_PER_INSERT = 10_000
BATCH = 20


def _rows(owner_ids: list[int], queue_ids: list[int], now_text: str) -> Iterator[str]:
    """Yield the VALUES of ~1M tasks owner by owner (so every owner index grows at its end: a quick fill).

    The first owner has BIG_OWNER_PENDING pending tasks; each other one ~900 tasks, 22 % pending,
    the rest finished history. Some pending tasks have a higher or lower priority, some a key.
    """
    rng = random.Random(16)
    per_owner = (TASKS - BIG_OWNER_PENDING) // (len(owner_ids) - 1)
    for index, owner in enumerate(owner_ids):
        for i in range(BIG_OWNER_PENDING if index == 0 else per_owner):
            pending = index == 0 or rng.random() < 0.22
            status = "pending" if pending else "succeeded"
            queue = queue_ids[0] if pending else queue_ids[i % len(queue_ids)]
            priority = rng.choice((0, 0, 0, 5, -5))
            key = f"'k{rng.randrange(500)}'" if rng.random() < 0.3 else "NULL"
            yield (
                f"({owner},{queue},'handler','noop','{{}}',{priority},'{status}',0,3,'{now_text}','',0,'','','[]',0,"
                f"{key},'{now_text}')"
            )


def _fill(queue: QueueConfig, other: QueueConfig) -> None:
    User = get_user_model()
    User.objects.bulk_create([User(username=f"tenant{i:04d}", password="!") for i in range(OWNERS)])
    owner_ids = list(User.objects.filter(username__startswith="tenant").order_by("id").values_list("id", flat=True))
    now_text = (timezone.now() - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    columns = (
        "owner_id, queue_id, kind, task_type, payload, priority, status, attempts, max_attempts, run_at, "
        "claimed_by, progress, progress_message, error, attempt_errors, cancel_requested, concurrency_key, created_at"
    )
    rows = _rows(owner_ids, [queue.pk, other.pk], now_text)
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0")
        try:
            while True:
                chunk = [row for _, row in zip(range(ROWS_PER_INSERT), rows, strict=False)]
                if not chunk:
                    break
                cursor.execute(f"INSERT INTO task_queue ({columns}) VALUES {','.join(chunk)}")
        finally:
            cursor.execute("SET SESSION foreign_key_checks = 1, unique_checks = 1")
        cursor.execute("ANALYZE TABLE task_queue")
        cursor.fetchall()


@pytest.fixture
def million_tasks(transactional_db) -> Iterator[QueueConfig]:
    """1M tasks of 1,000 owners in the test database; TRUNCATEd after (a DELETE would take minutes)."""
    queue = QueueConfig.objects.create(name="fair-1m", fairness="owner", per_key_concurrency=2)
    other = QueueConfig.objects.create(name="other-1m")
    try:
        _fill(queue, other)
        yield queue
    finally:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE TABLE task_queue")


def _plan(sql: str, params: list) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN FORMAT=JSON " + sql, params)
        return json.loads(cursor.fetchone()[0])


def _analyze(sql: str, params: list) -> dict:
    """MariaDB's ANALYZE: the query runs, and its plan tells how many rows each step really read."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE FORMAT=JSON " + sql, params)
        return json.loads(cursor.fetchone()[0])


def _tables(plan: object) -> list[dict]:
    """Every table access of a JSON plan, however deeply nested (derived tables, unions)."""
    found = []
    if isinstance(plan, dict):
        if "table_name" in plan and "access_type" in plan:
            found.append(plan)
        for value in plan.values():
            found += _tables(value)
    elif isinstance(plan, list):
        for value in plan:
            found += _tables(value)
    return found


def _task_reads(plan: dict) -> list[dict]:
    return [table for table in _tables(plan) if table["table_name"] == "task_queue"]


def _due() -> str:
    return connection.ops.adapt_datetimefield_value(timezone.now())


def _check_the_owners_are_found_by_bounded_reads_of_the_index(million_tasks: QueueConfig) -> None:
    params = [million_tasks.pk, 0, fair_claim.OWNER_SCAN_ROWS]
    plan = _plan(fair_claim.owners_sql(), params)
    (read,) = _task_reads(plan)
    assert read["key"] == "task_fair_idx", read
    assert read["used_key_parts"] == ["status", "queue_id", "owner_id"], read
    assert read.get("using_index"), "the index alone answers: no row is read"
    assert "filesort" not in json.dumps(plan), plan
    (ran,) = _task_reads(_analyze(fair_claim.owners_sql(), params))
    assert ran["r_rows"] <= fair_claim.OWNER_SCAN_ROWS, ran  # not the first owner's 100,000 tasks
    with CaptureQueriesContext(connection) as reads:
        owners = fair_claim.next_owners(million_tasks.pk, 0, BATCH)
    assert len(owners) == len(set(owners)) == BATCH
    assert len(reads.captured_queries) <= 3, "the big owner costs one read, then the next reads find many owners"


def _check_a_workers_random_start_is_one_index_dive(million_tasks: QueueConfig) -> None:
    plan = _plan(fair_claim.START_SQL, [million_tasks.pk])
    assert _task_reads(plan) == [], plan  # "Select tables optimized away": answered from the index
    assert "optimized away" in json.dumps(plan).lower(), plan


def _check_each_owners_candidates_are_one_index_range_in_claim_order(million_tasks: QueueConfig) -> None:
    owners = fair_claim.next_owners(million_tasks.pk, 0, BATCH)
    excluded = ["k1", "k2"]
    params: list = []
    for owner in owners:
        params += [million_tasks.pk, owner, _due(), *excluded, 3]
    sql = fair_claim.owner_candidates_sql(len(owners), len(excluded))
    plan = _plan(sql, params)
    reads = _task_reads(plan)
    assert len(reads) == BATCH
    for read in reads:
        assert read["key"] == "task_fair_idx", read
        assert read["used_key_parts"][:3] == ["status", "queue_id", "owner_id"], read
    assert "filesort" not in json.dumps(plan), plan
    ran = _task_reads(_analyze(sql, params))
    assert sum(read["r_rows"] for read in ran) <= 3 * BATCH * 4, ran


def _check_a_fair_queue_without_limits_locks_each_owners_range_as_it_reads(million_tasks: QueueConfig) -> None:
    owners = fair_claim.next_owners(million_tasks.pk, 0, BATCH)
    params: list = []
    for owner in owners:
        params += [million_tasks.pk, owner, _due(), 1]
    sql = fair_claim.owner_candidates_sql(len(owners), 0, transitions.CLAIM_COLUMNS)
    assert sql.count("FOR UPDATE SKIP LOCKED") == BATCH
    with transaction.atomic():
        plan = _plan(sql, params)
        reads = _task_reads(plan)
        assert len(reads) == BATCH
        for read in reads:
            assert read["key"] == "task_fair_idx", read
            assert read["used_key_parts"][:3] == ["status", "queue_id", "owner_id"], read
        assert "filesort" not in json.dumps(plan), plan
        ran = _task_reads(_analyze(sql, params))
        assert sum(read["r_rows"] for read in ran) <= BATCH * 2, "one row per owner, not the owners' backlogs"


def _check_the_ordered_candidates_read_task_claim_idx_without_a_filesort(million_tasks: QueueConfig) -> None:
    params = [million_tasks.pk, _due(), "k1", 60]
    plan = _plan(fair_claim.ordered_candidates_sql(1), params)
    (read,) = _task_reads(plan)
    assert read["key"] == "task_claim_idx", read
    assert "filesort" not in json.dumps(plan), plan


def _check_the_locking_read_takes_the_chosen_rows_by_primary_key_without_a_filesort(million_tasks: QueueConfig) -> None:
    now = timezone.now()
    chosen = fair_claim.plan(million_tasks, now, BATCH)
    assert len(chosen.ids) == BATCH
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        locked = transitions._lock_chosen(chosen.ids, now)
    assert {task.pk for task in locked} == set(chosen.ids)
    (sql,) = [q["sql"] for q in queries.captured_queries if "FOR UPDATE SKIP LOCKED" in q["sql"]]
    with transaction.atomic():
        plan = _plan(sql, [])
    (read,) = _task_reads(plan)
    assert read["key"] == "PRIMARY", read
    assert "filesort" not in json.dumps(plan), plan


def _check_a_fair_claim_at_scale_takes_tasks_from_each_of_the_next_owners(million_tasks: QueueConfig) -> None:
    fair_claim._cursor.clear()
    claimed = transitions.claim(worker_id="host:1:scale", queues=[million_tasks], limit=BATCH).tasks
    assert len(claimed) == BATCH
    assert len({task.owner_id for task in claimed}) == min(BATCH, fair_claim.OWNERS_PER_BATCH)
    assert all(task.queue_id == million_tasks.pk for task in claimed)
    assert TaskQueue.objects.filter(claimed_by="host:1:scale", status="running").count() == BATCH


def test_the_fair_claim_at_1m_tasks_and_1000_owners_reads_by_its_indexes_without_a_filesort(million_tasks):
    """One test, one fill: the table is built once (about a minute), then every read is checked on it."""
    _check_the_owners_are_found_by_bounded_reads_of_the_index(million_tasks)
    _check_a_workers_random_start_is_one_index_dive(million_tasks)
    _check_each_owners_candidates_are_one_index_range_in_claim_order(million_tasks)
    _check_a_fair_queue_without_limits_locks_each_owners_range_as_it_reads(million_tasks)
    _check_the_ordered_candidates_read_task_claim_idx_without_a_filesort(million_tasks)
    _check_the_locking_read_takes_the_chosen_rows_by_primary_key_without_a_filesort(million_tasks)
    _check_a_fair_claim_at_scale_takes_tasks_from_each_of_the_next_owners(million_tasks)
