"""The per-minute rollup: kept in step by the real transitions, rebuilt by the command, pruned by retention."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import counters, histograms, transitions
from tasks.models import QueueConfig, TaskMinuteStats, TaskQueue, TaskStatus
from tasks.outcomes import Outcome, OutcomeKind
from tasks.retention import minute_stats_prune
from tasks.tests.conftest import enqueue_many
from tasks.tests.factories import finished_fields, make_task

pytestmark = pytest.mark.django_db

ME = "host:1:minutes"
SNAPSHOT_COLUMNS = counters.MINUTE_EVENT_COLUMNS


def snapshot() -> dict:
    """Every rollup row as (queue id, minute) -> its non-zero values (sums rounded)."""
    rows = {}
    for row in TaskMinuteStats.objects.all():
        values = {column: getattr(row, column) for column in SNAPSHOT_COLUMNS if getattr(row, column)}
        for column in ("wait_seconds_sum", "run_seconds_sum"):
            if column in values:
                values[column] = round(values[column], 3)
        if values:
            rows[(row.queue_id, row.minute)] = values
    return rows


@pytest.fixture
def base():
    """A whole UTC minute ten minutes ago: every step of a test is placed from it."""
    return timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=10)


def enqueue_at(owner, n: int, created, **fields) -> list[TaskQueue]:
    tasks = enqueue_many(owner, n, run_at=created, **fields)
    TaskQueue.objects.filter(pk__in=[t.pk for t in tasks]).update(created_at=created)
    return tasks


def claim_at(now, limit: int = 20) -> list[TaskQueue]:
    return transitions.claim(worker_id=ME, queues=transitions.runnable_queues(), limit=limit, now=now).tasks


def record_at(
    now, outcomes: list[tuple[TaskQueue, OutcomeKind]], queues: dict | None = None, **fields
) -> list[transitions.Recorded]:
    queues = queues if queues is not None else {q.pk: q for q in QueueConfig.objects.all()}
    results = [(task, Outcome(task.pk, kind, **fields)) for task, kind in outcomes]
    return transitions.record_outcomes(results, worker_id=ME, queues=queues, now=now)


def test_a_claim_counts_nothing_and_a_success_counts_start_wait_outcome_and_run(alice, default_queue, base):
    enqueue_at(alice, 2, base)
    claimed = claim_at(base + timedelta(seconds=3))
    assert len(claimed) == 2
    assert snapshot() == {}, "a task is counted when it finishes"

    record_at(base + timedelta(seconds=30 + 70), [(task, OutcomeKind.SUCCEEDED) for task in claimed])

    wait, run = histograms.bucket_of(3), histograms.bucket_of(97)
    assert snapshot() == {
        (default_queue.pk, base): {"started": 2, "wait_seconds_sum": 6.0, histograms.WAIT_COLUMNS[wait]: 2},
        (default_queue.pk, base + timedelta(minutes=1)): {
            "succeeded": 2,
            "run_seconds_sum": 194.0,
            histograms.RUN_COLUMNS[run]: 2,
        },
    }


def test_a_retry_counts_nothing_until_the_last_attempt_fails(alice, default_queue, base):
    (task,) = enqueue_at(alice, 1, base, max_attempts=2)
    (first,) = claim_at(base + timedelta(seconds=1), limit=1)
    assert first.pk == task.pk
    record_at(base + timedelta(seconds=2), [(first, OutcomeKind.RETRYABLE)], error="boom")
    assert snapshot() == {}, "a failed attempt that will be retried is not an outcome"

    TaskQueue.objects.filter(pk=task.pk).update(run_at=base)
    (second,) = [t for t in claim_at(base + timedelta(seconds=5)) if t.pk == task.pk]
    record_at(base + timedelta(seconds=6), [(second, OutcomeKind.RETRYABLE)], error="boom again")

    rows = snapshot()
    row = rows[(default_queue.pk, base)]
    assert (row["started"], row["failed"], row["wait_seconds_sum"], row["run_seconds_sum"]) == (1, 1, 5.0, 1.0)
    assert row[histograms.WAIT_COLUMNS[histograms.bucket_of(5)]] == 1
    assert row[histograms.RUN_COLUMNS[histograms.bucket_of(1)]] == 1


def test_a_pending_task_cancelled_counts_cancelled_in_its_minute_without_a_start(alice, emails_queue):
    (task,) = enqueue_many(alice, 1, queue=emails_queue)
    transitions.cancel(task)
    ((key, values),) = snapshot().items()
    assert key == (emails_queue.pk, counters.minute_of(task.finished_at))
    assert values == {"cancelled": 1}


def test_a_running_task_cancelled_by_its_handler_counts_cancelled_with_its_run(alice, default_queue, base):
    enqueue_at(alice, 1, base)
    (claimed,) = claim_at(base + timedelta(seconds=1))
    record_at(base + timedelta(seconds=4), [(claimed, OutcomeKind.CANCELLED)], error="stopped")
    values = snapshot()[(default_queue.pk, base)]
    assert (values["started"], values["cancelled"], values["run_seconds_sum"]) == (1, 1, 3.0)


def test_a_lost_worker_on_its_last_attempt_counts_failed(alice, default_queue, base):
    enqueue_at(alice, 1, base, max_attempts=1)
    (claimed,) = claim_at(base + timedelta(seconds=2))
    TaskQueue.objects.filter(pk=claimed.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    (lost,) = transitions.recover_expired_leases()
    assert lost.status == TaskStatus.FAILED
    rows = snapshot()
    assert rows[(default_queue.pk, base)]["started"] == 1
    assert sum(values.get("failed", 0) for values in rows.values()) == 1


def test_retry_and_delete_leave_the_rollup_as_history(alice, default_queue, base):
    enqueue_at(alice, 2, base, max_attempts=1)
    claimed = claim_at(base + timedelta(seconds=1))
    record_at(base + timedelta(seconds=2), [(task, OutcomeKind.PERMANENT) for task in claimed], error="x")
    before = snapshot()
    transitions.reopen(TaskQueue.objects.get(pk=claimed[0].pk))
    transitions.delete(TaskQueue.objects.filter(pk=claimed[1].pk))
    assert snapshot() == before


def test_rebuild_task_stats_recomputes_the_rollup_from_the_tasks_within_its_window(alice, bob, emails_queue, base):
    enqueue_at(alice, 3, base)
    enqueue_at(bob, 2, base, queue=emails_queue, max_attempts=1)
    claimed = claim_at(base + timedelta(seconds=2))
    record_at(
        base + timedelta(seconds=65),
        [(t, OutcomeKind.SUCCEEDED if t.queue_id != emails_queue.pk else OutcomeKind.PERMANENT) for t in claimed],
        error="x",
    )
    (pending,) = enqueue_many(alice, 1)
    transitions.cancel(pending)
    # Older than the retention window: the rebuild leaves it out.
    with transaction.atomic():
        old = make_task(alice, **finished_fields(TaskStatus.SUCCEEDED, created=base - timedelta(days=9)))
        counters.record_finished([old])
    kept = {key: values for key, values in snapshot().items() if key[1] >= base - timedelta(days=1)}
    assert len(kept) == 5 and len(snapshot()) == 6

    TaskMinuteStats.objects.update(started=999, succeeded=0)
    out = StringIO()
    call_command("rebuild_task_stats", stdout=out)

    assert snapshot() == kept
    assert "5 per-minute row(s)" in out.getvalue()


def test_retention_prunes_old_minutes_in_batches(alice, default_queue, base):
    with transaction.atomic():
        for days in (9, 9.5, 10, 1):
            task = make_task(alice, **finished_fields(TaskStatus.SUCCEEDED, created=base - timedelta(days=days)))
            counters.record_finished([task])
    assert TaskMinuteStats.objects.count() == 4  # wait and run in the same minute each
    with CaptureQueriesContext(connection) as queries:
        deleted = minute_stats_prune(before=base - timedelta(days=8), batch_size=2)
    assert deleted == 3
    assert TaskMinuteStats.objects.count() == 1
    assert sum("DELETE" in q["sql"] for q in queries.captured_queries) == 2


def test_purge_tasks_prunes_the_rollup_past_its_retention(alice, default_queue, base):
    with transaction.atomic():
        for days in (9, 1):
            task = make_task(alice, **finished_fields(TaskStatus.SUCCEEDED, created=base - timedelta(days=days)))
            counters.record_finished([task])
    out = StringIO()
    call_command("purge_tasks", "--older-than", "30", stdout=out)
    assert "Deleted 1 per-minute and 0 per-hour statistics row(s) older than 8 days." in out.getvalue()
    assert TaskMinuteStats.objects.count() == 1


# --- The worker's finish path: statements per batch -------------------------------------------


def statements_of_a_finished_batch(alice, base, kinds: list[OutcomeKind]) -> list[str]:
    """The statements that record the second of two such batches (the counter rows exist: the steady state)."""
    queues = {q.pk: q for q in QueueConfig.objects.all()}
    for _ in range(2):
        enqueue_at(alice, len(kinds), base, max_attempts=1)
        claimed = sorted(claim_at(base + timedelta(seconds=1)), key=lambda t: t.pk)
        with CaptureQueriesContext(connection) as queries:
            recorded = record_at(base + timedelta(seconds=2), list(zip(claimed, kinds, strict=True)), queues, error="x")
        assert len(recorded) == len(kinds)
    return [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]


def test_a_batch_of_successes_costs_one_statement_more_for_the_rollup(alice, default_queue, base):
    statements = statements_of_a_finished_batch(alice, base, [OutcomeKind.SUCCEEDED] * 10)
    rollup = [sql for sql in statements if "task_minute_stats" in sql]
    assert len(rollup) == 1 and rollup[0].startswith("INSERT INTO task_minute_stats")
    # The UPDATE of the successes, the status count, the hourly row, the rollup upsert.
    assert len(statements) == 4, statements
    print(f"\nstatements per batch of 10 successes: {len(statements)}")


def test_a_mixed_batch_costs_one_statement_more_for_the_rollup(alice, default_queue, base):
    kinds = [OutcomeKind.SUCCEEDED] * 5 + [OutcomeKind.PERMANENT] * 3 + [OutcomeKind.CANCELLED] * 2
    statements = statements_of_a_finished_batch(alice, base, kinds)
    assert sum("task_minute_stats" in sql for sql in statements) == 1
    print(f"\nstatements per mixed batch of 10: {len(statements)}")


# --- Percentiles from the histograms ----------------------------------------------------------


def test_bucket_bounds_are_inclusive_and_the_last_bucket_is_open():
    assert histograms.bucket_of(0) == 0
    assert histograms.bucket_of(0.01) == 0
    assert histograms.bucket_of(0.0101) == 1
    assert histograms.bucket_of(50_000) == len(histograms.BOUNDS) - 1
    assert histograms.bucket_of(10**9) == histograms.BUCKETS - 1


def test_percentiles_of_known_times_fall_at_the_true_value_at_bounds_and_in_its_bucket_otherwise():
    counts = [0] * histograms.BUCKETS
    for seconds in range(1, 101):  # 1 s … 100 s, once each
        counts[histograms.bucket_of(seconds)] += 1
    assert histograms.percentile(counts, 50) == pytest.approx(50.0)
    assert histograms.percentile(counts, 20) == pytest.approx(20.0)
    p95 = histograms.percentile(counts, 95)
    assert 50 < p95 <= 100 and p95 == pytest.approx(50 + 50 * 45 / 50)
    assert histograms.percentile([0] * histograms.BUCKETS, 50) is None
    only_long = [0] * histograms.BUCKETS
    only_long[-1] = 3
    assert histograms.percentile(only_long, 99) == histograms.BOUNDS[-1]


def test_percentiles_from_the_rollup_match_known_wait_and_run_times(alice, default_queue, base):
    # True p50 0.5 s and p95 5 s (bucket bounds: exact), p99 200 s (interpolated in (100, 200]).
    waits = [0.5] * 50 + [5.0] * 45 + [200.0] * 5
    with transaction.atomic():
        tasks = []
        for index, wait in enumerate(waits):
            created = base - timedelta(seconds=wait)
            fields = finished_fields(TaskStatus.SUCCEEDED, created=created, wait=wait, run=1 + index % 2)
            tasks.append(make_task(alice, **fields))
        counters.record_finished(tasks)
    sums = {column: 0 for column in (*histograms.WAIT_COLUMNS, *histograms.RUN_COLUMNS)}
    for row in TaskMinuteStats.objects.all():
        for column in sums:
            sums[column] += getattr(row, column)
    wait = histograms.percentiles([sums[c] for c in histograms.WAIT_COLUMNS])
    run = histograms.percentiles([sums[c] for c in histograms.RUN_COLUMNS])
    assert wait == {"p50": pytest.approx(0.5), "p95": pytest.approx(5.0), "p99": pytest.approx(180.0)}
    assert run == {"p50": pytest.approx(1.0), "p95": pytest.approx(1.9), "p99": pytest.approx(1.98)}


# --- Under real workers ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(240)
def test_two_worker_processes_keep_the_rollup_equal_to_a_rebuild(alice, bob, default_queue, emails_queue, start_worker):
    """Two workers finishing the tasks of two owners in two queues race on the same minute rows."""
    for owner in (alice, bob):
        for queue in (default_queue, emails_queue):
            enqueue_many(owner, 60, queue=queue)
            enqueue_many(owner, 15, queue=queue, task_type="fail", max_attempts=1, payload={"message": "no"})
    workers = [start_worker("--concurrency", "2", "--burst") for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=200) == 0, worker.output()
    assert not TaskQueue.objects.filter(status__in=(TaskStatus.PENDING, TaskStatus.RUNNING)).exists()

    rows = TaskMinuteStats.objects.all()
    totals = {column: sum(getattr(row, column) for row in rows) for column in ("started", "succeeded", "failed")}
    assert totals == {"started": 300, "succeeded": 240, "failed": 60}
    kept = snapshot()
    counters.rebuild()
    rebuilt = snapshot()
    assert rebuilt.keys() == kept.keys()
    for key, values in kept.items():  # the sums in another order: equal up to float rounding
        assert rebuilt[key] == pytest.approx(values, abs=0.01), key
