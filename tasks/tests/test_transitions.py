"""Claiming, outcomes, leases and hand-backs: the SQL side of the worker, one call at a time."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import shortcuts
from core.db import errors as db_errors
from core.db.features import ensure_skip_locked, skip_locked_problem
from core.tests.both_ways import both_ways
from tasks import fair_claim, fast_sql, queue_cache, transitions, wakeups
from tasks.models import FailureGroup, QueueConfig, TaskHourlyStats, TaskQueue, TaskStatus, TaskStatusCount
from tasks.outcomes import Outcome, OutcomeKind
from tasks.tests.conftest import enqueue_many, fail_for_good
from tasks.transitions import CLAIM_SQL_MYSQL

# Every transition both ways: with the hand-written statements of tasks.fast_sql and with the ORM's.
raw_task_sql = both_ways("raw_task_sql")
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("raw_task_sql")]

ME = "host:1:aaaaaa"
OTHER = "host:2:bbbbbb"


def claim(limit: int = 10, *, names: tuple[str, ...] = (), worker_id: str = ME, now=None) -> transitions.Claim:
    queues = transitions.runnable_queues(names)
    return transitions.claim(worker_id=worker_id, queues=queues, limit=limit, now=now)


def fresh(task: TaskQueue) -> TaskQueue:
    return TaskQueue.objects.get(pk=task.pk)


@pytest.fixture
def woken(settings, monkeypatch) -> list[set[str | None]]:
    """Wake-ups on, without Redis: each `wakeups.notify` call's queue names, in order."""
    settings.TASKHUB_WAKEUP_URL = "redis://wake-ups.invalid:6379/0"
    calls: list[set[str | None]] = []
    monkeypatch.setattr(wakeups, "notify", lambda names: calls.append(set(names)))
    return calls


def test_it_claims_by_priority_then_run_at_then_id(alice, default_queue):
    now = timezone.now()
    low = enqueue_many(alice, priority=-5, run_at=now - timedelta(minutes=9))[0]
    late = enqueue_many(alice, priority=10, run_at=now - timedelta(minutes=1))[0]
    early = enqueue_many(alice, priority=10, run_at=now - timedelta(minutes=5))[0]
    same_a, same_b = enqueue_many(alice, 2, priority=0, run_at=now - timedelta(minutes=2))
    claimed = claim(now=now).tasks
    assert [t.pk for t in claimed] == [early.pk, late.pk, same_a.pk, same_b.pk, low.pk]


def test_a_claim_marks_tasks_running_under_a_lease_with_one_more_attempt(alice):
    queue = QueueConfig.objects.create(name="leased", task_timeout_seconds=120)
    task = enqueue_many(alice, queue=queue)[0]
    now = timezone.now()
    (claimed,) = claim(now=now).tasks
    stored = fresh(task)
    assert (stored.status, stored.attempts, stored.claimed_by) == (TaskStatus.RUNNING, 1, ME)
    assert stored.lease_expires_at == now + timedelta(seconds=120)
    assert stored.started_at == now
    assert (claimed.status, claimed.attempts, claimed.lease_expires_at) == ("running", 1, stored.lease_expires_at)


def test_it_claims_at_most_the_limit_and_never_the_same_task_twice(alice, default_queue):
    enqueue_many(alice, 7)
    first = {t.pk for t in claim(limit=5).tasks}
    second = {t.pk for t in claim(limit=5).tasks}
    assert (len(first), len(second)) == (5, 2)
    assert not first & second
    assert claim().tasks == []


def test_it_leaves_tasks_scheduled_for_later(alice, default_queue):
    later = enqueue_many(alice, run_at=timezone.now() + timedelta(minutes=5))[0]
    assert claim().tasks == []
    assert fresh(later).status == TaskStatus.PENDING


def test_paused_queues_are_not_runnable(alice, default_queue):
    paused = QueueConfig.objects.create(name="paused", is_paused=True)
    enqueue_many(alice, 3, queue=paused)
    assert [q.name for q in transitions.runnable_queues()] == ["default"]
    assert claim().tasks == []
    assert transitions.runnable_queues(("paused",)) == []


def test_it_claims_only_from_the_named_queues(alice, default_queue):
    emails = QueueConfig.objects.create(name="emails")
    enqueue_many(alice, 2)
    wanted = enqueue_many(alice, 2, queue=emails)
    assert {t.pk for t in claim(names=("emails",)).tasks} == {t.pk for t in wanted}


def test_max_concurrency_counts_tasks_running_on_any_worker(alice):
    # 4 places, 1 taken: 3 left (a limit and a count whose bits overlap would leave 5).
    limited = QueueConfig.objects.create(name="limited", max_concurrency=4)
    enqueue_many(alice, 1, queue=limited, status=TaskStatus.RUNNING, claimed_by=OTHER, attempts=1)
    enqueue_many(alice, 6, queue=limited)
    assert len(claim().tasks) == 3
    assert claim(worker_id=OTHER).tasks == []
    assert TaskQueue.objects.filter(queue=limited, status=TaskStatus.RUNNING).count() == 4


def test_a_limited_queue_at_its_limit_leaves_the_next_limited_queue_to_be_claimed(alice):
    full = QueueConfig.objects.create(name="full", max_concurrency=1)
    roomy = QueueConfig.objects.create(name="roomy", max_concurrency=5)
    enqueue_many(alice, 1, queue=full, status=TaskStatus.RUNNING, claimed_by=OTHER, attempts=1)
    enqueue_many(alice, 2, queue=full)
    wanted = enqueue_many(alice, 2, queue=roomy)
    assert {t.pk for t in claim().tasks} == {t.pk for t in wanted}


def test_unlimited_and_limited_queues_share_one_claim(alice, default_queue):
    limited = QueueConfig.objects.create(name="limited", max_concurrency=1)
    enqueue_many(alice, 3, queue=limited, priority=50)
    enqueue_many(alice, 3)
    claimed = claim(limit=10).tasks
    assert sorted(t.queue_id for t in claimed) == sorted([default_queue.pk] * 3 + [limited.pk])


def test_recording_a_finished_task_frees_its_place_for_the_claim_in_the_same_transaction(alice):
    limited = QueueConfig.objects.create(name="single", max_concurrency=1)
    first, second = enqueue_many(alice, 2, queue=limited)
    (running,) = claim().tasks
    recorded, claimed = transitions.record_and_claim(
        worker_id=ME,
        results=[(running, Outcome(running.pk, OutcomeKind.SUCCEEDED, result=1))],
        claim_from=[limited],
        limit=5,
    )
    assert [r.task.pk for r in recorded] == [first.pk]
    assert [t.pk for t in claimed.tasks] == [second.pk]


@contextmanager
def another_worker_holding(work) -> Iterator[list]:
    """Run `work` in another connection's open transaction until the block ends; yield its result."""
    result: list = []
    held_open, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        try:
            with transaction.atomic():
                result.extend(work())
                held_open.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert held_open.wait(30)
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 2")  # a wait would fail, not hang
        yield result
    finally:
        release.set()
        thread.join(30)


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_it_skips_rows_locked_by_another_worker(alice, default_queue):
    """A second worker claiming while the first's claim transaction is open gets other rows, at once."""
    enqueue_many(alice, 6)

    def first_claim() -> list[int]:
        # The claim's own steps, inside the transaction the other worker keeps open.
        return [t.pk for t in transitions._claim(OTHER, [default_queue], 3, timezone.now()).tasks]

    with another_worker_holding(first_claim) as first:
        second = [t.pk for t in claim(limit=10).tasks]
    assert len(first) == 3
    assert len(second) == 3
    assert not set(first) & set(second)


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_fair_claim_takes_the_next_tasks_of_the_owners_another_worker_is_claiming(alice, bob):
    """The fair read locks as it reads (SKIP LOCKED per owner): two workers on the same owners share them out."""
    fair = QueueConfig.objects.create(name="fair", fairness="owner")
    enqueue_many(alice, 3, queue=fair)
    enqueue_many(bob, 3, queue=fair)
    fair_claim._cursor.clear()

    def first_claim() -> list[int]:
        return [t.pk for t in transitions._claim(OTHER, [fair], 2, timezone.now()).tasks]

    with another_worker_holding(first_claim) as first:
        fair_claim._cursor.clear()  # the second worker starts its round-robin at the same owner
        second = claim(limit=2, names=("fair",)).tasks
    assert len(first) == 2 and not set(first) & {t.pk for t in second}
    assert sorted(t.owner_id for t in second) == sorted([alice.pk, bob.pk]), "each owner's next task, at once"


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_limited_queue_being_claimed_elsewhere_is_skipped_not_waited_for(alice, default_queue):
    limited = QueueConfig.objects.create(name="limited", max_concurrency=5)
    enqueue_many(alice, 2, queue=limited)
    enqueue_many(alice, 2)

    with another_worker_holding(lambda: QueueConfig.objects.filter(pk=limited.pk).select_for_update()):
        result = claim(limit=10)
    assert {t.queue_id for t in result.tasks} == {default_queue.pk}
    assert result.contended is True
    assert len(claim(limit=10).tasks) == 2


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_the_tasks_a_fair_plan_chose_are_locked_skipping_one_another_worker_holds(alice, default_queue):
    """A plan's choice, read without locks, is locked with SKIP LOCKED: a task another worker is claiming is passed over."""
    taken, free = enqueue_many(alice, 2)

    def other_claim() -> list[int]:
        return list(TaskQueue.objects.filter(pk=taken.pk).select_for_update().values_list("pk", flat=True))

    with transaction.atomic(), another_worker_holding(other_claim):
        locked = [task.pk for task in transitions._lock_chosen([taken.pk, free.pk], timezone.now())]
    assert locked == [free.pk]


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_lease_recovery_passes_over_the_tasks_another_worker_is_recovering(alice, default_queue):
    """Two workers recovering at once share the expired leases out (SKIP LOCKED), neither waits."""
    now = timezone.now()
    expired = now - timedelta(seconds=5)
    enqueue_many(
        alice, 2, status=TaskStatus.RUNNING, claimed_by=OTHER, attempts=1, max_attempts=3,
        lease_expires_at=expired, started_at=expired,
    )  # fmt: skip

    with another_worker_holding(lambda: [t.pk for t in transitions._recover(now, 1)]) as first:
        second = [t.pk for t in transitions.recover_expired_leases(now=now)]
    assert len(first) == 1 and len(second) == 1 and set(first) != set(second)
    assert set(TaskQueue.objects.values_list("status", flat=True)) == {TaskStatus.PENDING}


@pytest.mark.mysql
def test_the_claim_query_uses_task_claim_idx_without_a_filesort(alice, default_queue):
    """No filesort: a locking read locks every row it sorts, which would serialise the workers."""
    other = QueueConfig.objects.create(name="other")
    enqueue_many(alice, 100, queue=other)
    enqueue_many(alice, 100, status=TaskStatus.SUCCEEDED)
    enqueue_many(alice, 100, priority=5)
    params = [default_queue.pk, connection.ops.adapt_datetimefield_value(timezone.now()), 20]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN FORMAT=JSON " + CLAIM_SQL_MYSQL, params)
        plan = json.loads(cursor.fetchone()[0])
    (step,) = plan["query_block"]["nested_loop"]
    assert step["table"]["key"] == "task_claim_idx", plan
    assert step["table"]["used_key_parts"] == ["status", "queue_id"], plan
    assert "filesort" not in json.dumps(plan), plan


def test_success_stores_the_result_and_counts_the_task(alice, default_queue):
    task = enqueue_many(alice)[0]
    (claimed,) = claim().tasks
    recorded = transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.SUCCEEDED, result={"ok": "数据 🚀"}))],
        worker_id=ME,
        queues={default_queue.pk: default_queue},
    )
    stored = fresh(task)
    assert [r.status for r in recorded] == [TaskStatus.SUCCEEDED]
    assert (stored.status, stored.result, stored.progress, stored.lease_expires_at) == (
        "succeeded",
        {"ok": "数据 🚀"},
        100,
        None,
    )
    assert stored.finished_at is not None
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.SUCCEEDED).count == 1


def test_a_null_result_is_stored_as_null(alice, default_queue):
    task = enqueue_many(alice)[0]
    (claimed,) = claim().tasks
    transitions.record_outcomes([(claimed, Outcome(task.pk, OutcomeKind.SUCCEEDED))], worker_id=ME, queues={})
    assert (fresh(task).status, fresh(task).result) == (TaskStatus.SUCCEEDED, None)
    assert TaskQueue.objects.filter(pk=task.pk, result__isnull=True).exists()  # SQL NULL, not JSON null


def test_an_error_is_retried_with_backoff_while_attempts_remain(alice):
    queue = QueueConfig.objects.create(name="q", retry_backoff_seconds=40, retry_backoff_max_seconds=1000)
    task = enqueue_many(alice, queue=queue, max_attempts=3)[0]
    (claimed,) = claim().tasks
    now = timezone.now()
    transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.RETRYABLE, error="ValueError: nope"))],
        worker_id=ME,
        queues={queue.pk: queue},
        now=now,
    )
    stored = fresh(task)
    assert (stored.status, stored.attempts, stored.error, stored.claimed_by) == ("pending", 1, "ValueError: nope", "")
    assert now + timedelta(seconds=20) <= stored.run_at <= now + timedelta(seconds=40)
    assert not TaskStatusCount.objects.exists()


@pytest.mark.parametrize(
    ("asked", "waited"),
    [
        (-5, timedelta(0)),  # a negative backoff retries at once
        (200 * 24 * 3600, timedelta(days=200)),
        (2 * 365 * 24 * 3600, timedelta(days=365)),  # beyond a year it is surely a mistake: a year
    ],
)
def test_a_task_s_own_backoff_is_kept_between_none_and_a_year(alice, default_queue, asked, waited):
    task = enqueue_many(alice, max_attempts=3)[0]
    (claimed,) = claim().tasks
    now = timezone.now()
    transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.RETRYABLE, error="later", retry_delay=asked))],
        worker_id=ME,
        queues={default_queue.pk: default_queue},
        now=now,
    )
    assert (fresh(task).status, fresh(task).run_at) == (TaskStatus.PENDING, now + waited)


def test_recorded_retries_and_places_freed_under_a_concurrency_limit_wake_their_queues(alice, woken):
    plain, limited = (
        QueueConfig.objects.create(name="plain"),
        QueueConfig.objects.create(name="limited", max_concurrency=5),
    )
    enqueue_many(alice, 3, queue=plain, max_attempts=3)
    enqueue_many(alice, queue=limited)
    retried, failed, done, freed = claim().tasks
    queues = {plain.pk: plain, limited.pk: limited}

    def record(task: TaskQueue, kind: OutcomeKind) -> list[set[str | None]]:
        woken.clear()
        transitions.record_outcomes([(task, Outcome(task.pk, kind, error="e"))], worker_id=ME, queues=queues)
        return list(woken)

    assert record(done, OutcomeKind.SUCCEEDED) == [], "a success in a queue without a limit frees nothing to wake for"
    assert record(failed, OutcomeKind.PERMANENT) == [], "nor does a failure"
    assert record(retried, OutcomeKind.RETRYABLE) == [{"plain"}]
    assert record(freed, OutcomeKind.SUCCEEDED) == [{"limited"}]


@pytest.mark.parametrize(("attempts", "seconds"), [(0, 10), (9, 3600)])
def test_without_its_queue_at_hand_a_retry_backs_off_from_10_s_doubling_up_to_an_hour(
    alice, default_queue, monkeypatch, attempts, seconds
):
    monkeypatch.setattr(transitions.random, "uniform", lambda low, high: high)  # the top of the jitter
    task = enqueue_many(alice, attempts=attempts, max_attempts=20)[0]
    (claimed,) = claim().tasks
    now = timezone.now()
    transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.RETRYABLE, error="E"))], worker_id=ME, queues={}, now=now
    )
    assert fresh(task).run_at == now + timedelta(seconds=seconds)


def test_each_failed_attempt_adds_its_entry_to_the_history_after_the_earlier_ones(alice, default_queue):
    task = enqueue_many(alice, max_attempts=3)[0]
    (first,) = claim().tasks
    transitions.record_outcomes(
        [(first, Outcome(task.pk, OutcomeKind.RETRYABLE, error="E: one", exception="app.One"))],
        worker_id=ME,
        queues={},
    )
    (second,) = claim(worker_id=OTHER, now=timezone.now() + timedelta(hours=2)).tasks
    transitions.record_outcomes(
        [(second, Outcome(task.pk, OutcomeKind.PERMANENT, error="E: two", exception="app.Two"))],
        worker_id=OTHER,
        queues={},
    )
    assert fresh(task).attempt_errors == [
        {
            "attempt": 1,
            "worker": ME,
            "exception": "app.One",
            "error": "E: one",
            "started_at": first.started_at.isoformat(),
        },
        {
            "attempt": 2,
            "worker": OTHER,
            "exception": "app.Two",
            "error": "E: two",
            "started_at": second.started_at.isoformat(),
        },
    ]


def test_a_mixed_batch_records_each_outcome_it_still_holds_and_groups_only_the_failure(alice, default_queue):
    enqueue_many(alice, 5, max_attempts=3)
    succeeded, retried, failed, cancelled, lost = claim(limit=5).tasks
    TaskQueue.objects.filter(pk=lost.pk).update(claimed_by=OTHER)
    outcomes = [  # the one no longer held among the others: those after it are recorded too
        (succeeded, Outcome(succeeded.pk, OutcomeKind.SUCCEEDED, result={"n": 1})),
        (lost, Outcome(lost.pk, OutcomeKind.PERMANENT, error="E: late")),
        (retried, Outcome(retried.pk, OutcomeKind.RETRYABLE, error="E: again")),
        (failed, Outcome(failed.pk, OutcomeKind.PERMANENT, error="E: never", exception="app.E")),
        (cancelled, Outcome(cancelled.pk, OutcomeKind.CANCELLED, error="stopped")),
    ]
    recorded = transitions.record_outcomes(outcomes, worker_id=ME, queues={default_queue.pk: default_queue})
    assert [(r.task.pk, r.status) for r in recorded] == [
        (succeeded.pk, TaskStatus.SUCCEEDED),
        (retried.pk, TaskStatus.PENDING),
        (failed.pk, TaskStatus.FAILED),
        (cancelled.pk, TaskStatus.CANCELLED),
    ]
    assert {t.pk: (t.status, t.claimed_by) for t in TaskQueue.objects.all()} == {
        succeeded.pk: (TaskStatus.SUCCEEDED, ME),
        retried.pk: (TaskStatus.PENDING, ""),
        failed.pk: (TaskStatus.FAILED, ME),
        cancelled.pk: (TaskStatus.CANCELLED, ME),
        lost.pk: (TaskStatus.RUNNING, OTHER),
    }
    assert (fresh(succeeded).result, fresh(succeeded).progress) == ({"n": 1}, 100)
    assert (recorded[0].task.result, recorded[0].task.progress) == ({"n": 1}, 100)  # as stored
    assert sorted(TaskStatusCount.objects.values_list("status", "count")) == [
        (TaskStatus.CANCELLED, 1),
        (TaskStatus.FAILED, 1),
        (TaskStatus.SUCCEEDED, 1),
    ]
    group = FailureGroup.objects.get()
    assert (group.count, fresh(failed).failure_group_id) == (1, group.key)


def test_the_last_failed_attempt_fails_the_task_with_its_error(alice, default_queue):
    task = enqueue_many(alice, max_attempts=1)[0]
    (claimed,) = claim().tasks
    transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.RETRYABLE, error="boom"))], worker_id=ME, queues={}
    )
    stored = fresh(task)
    assert (stored.status, stored.error, stored.attempts) == (TaskStatus.FAILED, "boom", 1)
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.FAILED).count == 1


def test_a_final_outcome_fails_at_once_even_with_attempts_left(alice, default_queue):
    task = enqueue_many(alice, max_attempts=5)[0]
    (claimed,) = claim().tasks
    transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.PERMANENT, error="unknown task type"))], worker_id=ME, queues={}
    )
    assert fresh(task).status == TaskStatus.FAILED


def test_a_permanent_failure_of_a_task_whose_cancel_was_requested_fails_it(alice, default_queue):
    task = enqueue_many(alice, max_attempts=5)[0]
    (claimed,) = claim().tasks
    transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.PERMANENT, error="E: never", exception="app.E"))],
        worker_id=ME,
        queues={},
        cancel_requested=[task.pk],
    )
    assert (fresh(task).status, fresh(task).error) == (TaskStatus.FAILED, "E: never")


def test_an_outcome_for_an_earlier_attempt_is_refused_even_when_this_worker_claimed_the_task_again(
    alice, default_queue
):
    task = enqueue_many(alice, max_attempts=5)[0]
    (claimed,) = claim().tasks
    TaskQueue.objects.filter(pk=task.pk).update(attempts=claimed.attempts + 1)  # taken back, claimed again
    for kind in (OutcomeKind.PERMANENT, OutcomeKind.RETRYABLE, OutcomeKind.SUCCEEDED):
        recorded = transitions.record_outcomes(
            [(claimed, Outcome(task.pk, kind, error="E: late"))], worker_id=ME, queues={}
        )
        assert recorded == []
        assert (fresh(task).status, fresh(task).attempts, fresh(task).error) == (TaskStatus.RUNNING, 2, "")


@pytest.mark.parametrize("kind", [OutcomeKind.CANCELLED, OutcomeKind.RETRYABLE])
def test_a_cancel_request_ends_the_task_cancelled(alice, default_queue, kind):
    task = enqueue_many(alice, max_attempts=5)[0]
    (claimed,) = claim().tasks
    transitions.record_outcomes(
        [(claimed, Outcome(task.pk, kind, error="stopped at 40%"))],
        worker_id=ME,
        queues={},
        cancel_requested=[task.pk],
    )
    stored = fresh(task)
    assert (stored.status, stored.progress_message) == (TaskStatus.CANCELLED, "stopped at 40%")
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.CANCELLED).count == 1


def test_a_cancelled_task_keeps_the_first_255_characters_of_its_message(alice, default_queue):
    task = enqueue_many(alice)[0]
    (claimed,) = claim().tasks
    transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.CANCELLED, error="stopped: " + "x" * 300))], worker_id=ME, queues={}
    )
    assert fresh(task).progress_message == ("stopped: " + "x" * 300)[:255]


def test_an_outcome_for_a_task_taken_back_meanwhile_changes_nothing(alice, default_queue):
    task = enqueue_many(alice)[0]
    (claimed,) = claim().tasks
    TaskQueue.objects.filter(pk=task.pk).update(status=TaskStatus.PENDING, claimed_by="")
    (reclaimed,) = claim(worker_id=OTHER).tasks
    recorded = transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.SUCCEEDED, result=1))], worker_id=ME, queues={}
    )
    assert recorded == []
    stored = fresh(task)
    assert (stored.status, stored.claimed_by, stored.attempts) == (TaskStatus.RUNNING, OTHER, 2)
    assert not TaskStatusCount.objects.exists()


def test_a_batch_of_outcomes_costs_the_same_queries_as_one(alice, default_queue, django_assert_max_num_queries):
    enqueue_many(alice, 21)
    one, *many = claim(limit=21).tasks

    def record(tasks) -> None:
        outcomes = [(t, Outcome(t.pk, OutcomeKind.SUCCEEDED, result={"n": t.pk})) for t in tasks]
        transitions.record_outcomes(outcomes, worker_id=ME, queues={})

    with django_assert_max_num_queries(10) as single:
        record([one])
    with django_assert_max_num_queries(len(single.captured_queries)):
        record(many)
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.SUCCEEDED).count == 21
    assert {t.pk: t.result for t in TaskQueue.objects.all()} == {t.pk: {"n": t.pk} for t in [one, *many]}


def test_across_queues_a_claim_takes_the_best_tasks_by_priority_then_run_at(alice, default_queue):
    other = QueueConfig.objects.create(name="other")
    now = timezone.now()
    enqueue_many(alice, priority=1, run_at=now - timedelta(minutes=9))
    best = enqueue_many(alice, queue=other, priority=9, run_at=now - timedelta(minutes=1))[0]
    assert [t.pk for t in claim(limit=1, now=now).tasks] == [best.pk]


def test_a_queue_at_its_concurrency_limit_is_not_taken_for_one_with_nothing_runnable(alice):
    limited = QueueConfig.objects.create(name="limited", max_concurrency=1)
    enqueue_many(alice, 1, queue=limited, status=TaskStatus.RUNNING, claimed_by=OTHER, attempts=1)
    enqueue_many(alice, 2, queue=limited)
    result = claim(names=("limited",))
    assert (result.tasks, result.empty_queues, result.contended) == ([], set(), False)


def test_a_task_with_its_own_timeout_is_leased_and_renewed_for_that_long(alice):
    queue = QueueConfig.objects.create(name="leased", task_timeout_seconds=120)
    own = enqueue_many(alice, queue=queue, timeout_seconds=30)[0]
    plain = enqueue_many(alice, queue=queue)[0]
    expected = {own.pk: timedelta(seconds=30), plain.pk: timedelta(seconds=120)}
    now = timezone.now()
    claimed = claim(now=now).tasks
    assert {t.pk: fresh(t).lease_expires_at - now for t in claimed} == expected
    later = now + timedelta(minutes=5)
    transitions.renew_leases(worker_id=ME, tasks=claimed, lease_seconds={queue.pk: 120}, now=later)
    assert {t.pk: fresh(t).lease_expires_at - later for t in claimed} == expected


def test_a_claim_names_the_queues_that_had_nothing_runnable(alice, default_queue):
    later = QueueConfig.objects.create(name="later")
    idle = QueueConfig.objects.create(name="idle")
    enqueue_many(alice, 2)
    enqueue_many(alice, 3, queue=later, run_at=timezone.now() + timedelta(hours=1))
    result = claim(limit=10)
    assert len(result.tasks) == 2
    assert result.empty_queues == {later.pk, idle.pk}


def test_a_claim_reads_when_the_next_task_is_due_only_when_asked_and_only_when_it_found_nothing(alice, default_queue):
    later = QueueConfig.objects.create(name="later")
    due_at = timezone.now() + timedelta(hours=1)
    enqueue_many(alice, queue=later, run_at=due_at)
    enqueue_many(alice)

    def look(names: tuple[str, ...], *, look_ahead: bool) -> transitions.Claim:
        queues = transitions.runnable_queues(names)
        return transitions.record_and_claim(worker_id=ME, claim_from=queues, limit=10, look_ahead=look_ahead)[1]

    assert look(("later",), look_ahead=False).next_run_at is None
    assert claim(names=("later",)).next_run_at is None, "a plain claim never looks ahead"
    assert look(("later",), look_ahead=True).next_run_at == due_at
    found = look(("default", "later"), look_ahead=True)
    assert (len(found.tasks), found.empty_queues, found.next_run_at) == (1, {later.pk}, None)
    assert not found.contended, "queues without limits are never contended"


def test_a_claim_of_nothing_costs_no_round_trip(alice, default_queue):
    enqueue_many(alice)
    queues = transitions.runnable_queues(())
    with CaptureQueriesContext(connection) as captured:
        assert transitions.claim(worker_id=ME, queues=queues, limit=0).tasks == []
        assert transitions.record_and_claim(worker_id=ME, claim_from=queues, limit=0, look_ahead=True) == (
            [],
            transitions.Claim(),
        )
        assert transitions.claim(worker_id=ME, queues=[], limit=10).tasks == []
    assert captured.captured_queries == []
    # Recording with a claim of nothing (a worker's last flush): the claim's part costs nothing.
    with CaptureQueriesContext(connection) as captured:
        nothing = transitions._claim(ME, queues, 0, timezone.now(), look_ahead=True)
    assert captured.captured_queries == []
    # Nothing claimed, and nothing said about the queues: not contended, nothing held back.
    assert (nothing.tasks, nothing.contended, nothing.held_back, nothing.partial, nothing.next_run_at) == (
        [], False, False, False, None,
    )  # fmt: skip


def test_a_batch_of_successes_is_one_guarded_update_without_a_locking_read(alice, default_queue):
    enqueue_many(alice, 5)
    tasks = claim(limit=5).tasks
    outcomes = [(t, Outcome(t.pk, OutcomeKind.SUCCEEDED, result={"n": t.pk})) for t in tasks]
    with CaptureQueriesContext(connection) as captured:
        recorded = transitions.record_outcomes(outcomes, worker_id=ME, queues={})
    statements = [q["sql"].replace('"', "").replace("`", "") for q in captured.captured_queries]
    assert not [sql for sql in statements if "FOR UPDATE" in sql or sql.startswith("SELECT")], statements
    assert len([sql for sql in statements if sql.startswith("UPDATE task_queue")]) == 1, statements
    assert [r.status for r in recorded] == [TaskStatus.SUCCEEDED] * 5
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.SUCCEEDED).count == 5


def test_in_a_batch_of_successes_only_the_tasks_still_held_are_recorded_and_counted(alice, default_queue):
    enqueue_many(alice, 3)
    first, lost, last = claim(limit=3).tasks
    TaskQueue.objects.filter(pk=lost.pk).update(status=TaskStatus.PENDING, claimed_by="")
    claim(worker_id=OTHER)
    outcomes = [(t, Outcome(t.pk, OutcomeKind.SUCCEEDED, result=t.pk)) for t in (first, lost, last)]
    recorded = transitions.record_outcomes(outcomes, worker_id=ME, queues={})
    assert [r.task.pk for r in recorded] == [first.pk, last.pk]
    assert {t.pk: (t.status, t.claimed_by) for t in TaskQueue.objects.all()} == {
        first.pk: (TaskStatus.SUCCEEDED, ME),
        lost.pk: (TaskStatus.RUNNING, OTHER),
        last.pk: (TaskStatus.SUCCEEDED, ME),
    }
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.SUCCEEDED).count == 2


def test_a_success_of_an_earlier_attempt_does_not_finish_the_same_workers_new_claim(alice, default_queue):
    task = enqueue_many(alice)[0]
    (earlier,) = claim().tasks
    TaskQueue.objects.filter(pk=task.pk).update(status=TaskStatus.PENDING, claimed_by="")  # its lease was taken back
    (again,) = claim().tasks
    assert again.attempts == earlier.attempts + 1
    assert (
        transitions.record_outcomes([(earlier, Outcome(task.pk, OutcomeKind.SUCCEEDED))], worker_id=ME, queues={}) == []
    )
    assert (fresh(task).status, fresh(task).attempts) == (TaskStatus.RUNNING, 2)
    assert not TaskStatusCount.objects.exists()


def test_expired_leases_are_retried_or_failed_as_worker_lost(alice, default_queue):
    now = timezone.now()
    expired = now - timedelta(seconds=1)
    common = {"status": TaskStatus.RUNNING, "claimed_by": OTHER, "lease_expires_at": expired, "started_at": expired}
    retried = enqueue_many(alice, attempts=1, max_attempts=3, **common)[0]
    spent = enqueue_many(alice, attempts=3, max_attempts=3, **common)[0]
    common["lease_expires_at"] = now + timedelta(minutes=1)
    alive = enqueue_many(alice, attempts=1, **common)[0]

    recovered = transitions.recover_expired_leases(now=now)

    assert {t.pk for t in recovered} == {retried.pk, spent.pk}
    assert (fresh(retried).status, fresh(retried).error, fresh(retried).attempts) == ("pending", "worker lost", 1)
    assert fresh(retried).run_at > now
    assert (fresh(spent).status, fresh(spent).error) == (TaskStatus.FAILED, transitions.WORKER_LOST)
    assert fresh(alive).status == TaskStatus.RUNNING
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.FAILED).count == 1


def test_an_expired_lease_of_a_task_whose_cancel_was_requested_ends_it_cancelled_in_no_failure_group(alice):
    now = timezone.now()
    expired = now - timedelta(seconds=1)
    task = enqueue_many(
        alice, status=TaskStatus.RUNNING, claimed_by=OTHER, lease_expires_at=expired, started_at=expired,
        attempts=1, max_attempts=3, cancel_requested=True,
    )[0]  # fmt: skip

    (recovered,) = transitions.recover_expired_leases(now=now)

    assert (recovered.pk, fresh(task).status, fresh(task).failure_group_id) == (task.pk, TaskStatus.CANCELLED, None)
    assert not FailureGroup.objects.exists()
    assert list(TaskStatusCount.objects.values_list("status", "count")) == [(TaskStatus.CANCELLED, 1)]


def test_lease_recovery_wakes_the_queues_of_the_tasks_it_retries_and_no_other(alice, woken):
    now = timezone.now()
    expired = now - timedelta(seconds=1)
    again, spent = QueueConfig.objects.create(name="again"), QueueConfig.objects.create(name="spent")
    common = {"status": TaskStatus.RUNNING, "claimed_by": OTHER, "lease_expires_at": expired, "started_at": expired}
    enqueue_many(alice, queue=again, attempts=1, max_attempts=3, **common)
    enqueue_many(alice, queue=spent, attempts=3, max_attempts=3, **common)
    woken.clear()

    assert len(transitions.recover_expired_leases(now=now)) == 2
    assert woken == [{"again"}]


def test_a_bulk_retry_wakes_the_queues_of_the_tasks_it_reopens(alice, woken):
    emails = QueueConfig.objects.create(pk=alice.pk + 1000, name="emails")  # an id no other column holds
    queue_cache.queues_named({"emails"}, lambda names: {q.name: q for q in QueueConfig.objects.filter(name__in=names)})
    try:
        (task,) = fail_for_good(alice, error="E: {i}", queue=emails)
        woken.clear()
        assert transitions.reopen_many(TaskQueue.objects.filter(pk=task.pk)) == 1
    finally:
        queue_cache.forget()
    assert woken == [{"emails"}]


def test_the_idle_look_s_next_task_is_of_an_unpaused_queue(alice, default_queue):
    paused = QueueConfig.objects.create(name="paused", is_paused=True)
    soon, later = timezone.now() + timedelta(hours=1), timezone.now() + timedelta(hours=2)
    enqueue_many(alice, queue=paused, run_at=soon)
    enqueue_many(alice, run_at=later)
    assert transitions.idle_look().run_at == later
    assert transitions.idle_look(["paused"]).run_at is None


def test_a_bulk_move_wakes_the_target_queue_s_workers_only_when_something_moved(alice, default_queue, woken):
    target = QueueConfig.objects.create(name="target")
    task = enqueue_many(alice)[0]
    woken.clear()
    assert transitions.move_many(TaskQueue.objects.filter(pk=task.pk), target) == 1
    assert woken == [{"target"}]
    woken.clear()
    assert transitions.move_many(TaskQueue.objects.filter(pk=task.pk), target) == 0
    assert woken == []


def test_a_bulk_retry_passes_over_a_task_whose_unique_key_an_active_task_holds(alice, default_queue):
    clash, free, plain = (
        fail_for_good(alice, error="E: {i}", unique_key="taken")[0],
        fail_for_good(alice, error="E: {i}", unique_key="free")[0],
        fail_for_good(alice, error="E: {i}")[0],
    )
    enqueue_many(alice, unique_key="taken")  # the key is active again
    reopened = transitions.reopen_many(TaskQueue.objects.filter(pk__in=[clash.pk, free.pk, plain.pk]))
    assert reopened == 2
    assert [fresh(t).status for t in (clash, free, plain)] == [
        TaskStatus.FAILED,
        TaskStatus.PENDING,
        TaskStatus.PENDING,
    ]


def test_renewing_leases_extends_them_and_reports_cancels_and_losses(alice, default_queue):
    enqueue_many(alice, 4)
    kept, cancelled, lost, lost_too = claim().tasks
    TaskQueue.objects.filter(pk=cancelled.pk).update(cancel_requested=True)
    TaskQueue.objects.filter(pk=lost.pk).update(claimed_by=OTHER)
    TaskQueue.objects.filter(pk=lost_too.pk).update(claimed_by="host:0:000000")  # an id sorting before ours
    later = timezone.now() + timedelta(hours=1)

    check = transitions.renew_leases(
        worker_id=ME, tasks=[kept, cancelled, lost, lost_too], lease_seconds={default_queue.pk: 50}, now=later
    )

    assert check.held == {kept.pk, cancelled.pk}
    TaskQueue.objects.filter(pk=kept.pk).update(attempts=kept.attempts + 1)  # taken back, claimed by us again
    again = transitions.renew_leases(worker_id=ME, tasks=[kept], lease_seconds={default_queue.pk: 50}, now=later)
    assert again.held == set(), "another attempt of the task, not the one this run holds"
    assert check.cancel_requested == {cancelled.pk}
    assert fresh(kept).lease_expires_at == later + timedelta(seconds=50)
    assert fresh(lost).lease_expires_at != later + timedelta(seconds=50)


def test_a_task_the_worker_already_finished_is_no_longer_held_when_it_renews(alice, default_queue):
    enqueue_many(alice, 4)
    succeeded, failed, cancelled, running = claim().tasks
    outcomes = [
        (succeeded, Outcome(succeeded.pk, OutcomeKind.SUCCEEDED)),
        (failed, Outcome(failed.pk, OutcomeKind.PERMANENT, error="x")),
        (cancelled, Outcome(cancelled.pk, OutcomeKind.CANCELLED)),
    ]
    transitions.record_outcomes(outcomes, worker_id=ME, queues={})
    assert {t.claimed_by for t in TaskQueue.objects.all()} == {ME}, "a finished task keeps the claim that ran it"
    tasks = [succeeded, failed, cancelled, running]
    check = transitions.renew_leases(worker_id=ME, tasks=tasks, lease_seconds={default_queue.pk: 50})
    assert check.held == {running.pk}


def test_progress_is_written_on_the_tasks_the_worker_still_holds(alice, default_queue):
    enqueue_many(alice, 2)
    held, lost = claim().tasks
    TaskQueue.objects.filter(pk=lost.pk).update(claimed_by=OTHER)
    assert transitions.write_progress(worker_id=ME, reports={held.pk: (40, "two of five"), lost.pk: (90, "x")}) == 1
    assert [(t.progress, t.progress_message) for t in (fresh(held), fresh(lost))] == [(40, "two of five"), (0, "")]


def test_handing_back_does_not_use_up_an_attempt(alice, default_queue):
    enqueue_many(alice, 2, run_at=timezone.now() - timedelta(hours=1))
    tasks = claim().tasks
    assert transitions.release(tasks) == 2
    for task in tasks:
        stored = fresh(task)
        assert (stored.status, stored.attempts, stored.claimed_by, stored.lease_expires_at) == ("pending", 0, "", None)
    assert len(claim().tasks) == 2


@pytest.mark.parametrize("earlier", [1, 2])
def test_handing_back_a_retry_gives_back_only_the_attempt_it_claimed(alice, default_queue, earlier):
    task = enqueue_many(alice, attempts=earlier, max_attempts=5)[0]  # its earlier attempts failed, it was retried
    (claimed,) = claim().tasks
    assert claimed.attempts == earlier + 1
    assert transitions.release([claimed]) == 1
    assert (fresh(task).status, fresh(task).attempts) == (TaskStatus.PENDING, earlier)


def test_handing_back_wakes_the_queues_of_the_tasks_handed_back_and_none_when_nothing_was_held(
    alice, default_queue, woken
):
    enqueue_many(alice)
    (claimed,) = claim().tasks
    queue_cache.forget()
    woken.clear()
    assert transitions.release([claimed]) == 1
    assert woken == [{None}], "its queue's name not at hand: a wake-up for some queue, never a query for the name"
    woken.clear()
    assert (transitions.release([claimed]), transitions.release([])) == (0, 0)
    assert woken == []
    (claimed,) = claim().tasks
    claimed.queue = default_queue  # its queue at hand on the task itself: that name, still no query
    woken.clear()
    assert transitions.release([claimed]) == 1
    assert woken == [{default_queue.name}]


def test_the_raw_task_sql_shortcut_decides_who_writes_the_hand_written_statements_or_the_orm(raw_task_sql):
    assert transitions._fast_sql() is (fast_sql if raw_task_sql else None)


def test_a_bulk_retry_leaves_each_task_as_a_single_retry_does(alice, default_queue):
    first, second = fail_for_good(alice, 2, error="E: {i}")
    TaskQueue.objects.filter(pk__in=[first.pk, second.pk]).update(
        progress=70, progress_message="70%", result={"partial": 1}, cancel_requested=True
    )
    assert transitions.reopen(first)
    assert transitions.reopen_many(TaskQueue.objects.filter(pk=second.pk)) == 1
    fields = (
        "status", "attempts", "claimed_by", "lease_expires_at", "progress", "progress_message", "result", "error",
        "attempt_errors", "cancel_requested", "started_at", "finished_at", "failure_group_id",
    )  # fmt: skip
    expected = (TaskStatus.PENDING, 0, "", None, 0, "", None, "", [], False, None, None, None)
    assert [tuple(getattr(fresh(task), name) for name in fields) for task in (first, second)] == [expected, expected]


def test_a_bulk_move_moves_a_task_holding_a_unique_key_unless_the_target_queue_has_that_key(alice, default_queue):
    target = QueueConfig.objects.create(name="target")
    plain = enqueue_many(alice)[0]
    clash = enqueue_many(alice, unique_key="taken")[0]  # first: the ones after it are still moved
    free = enqueue_many(alice, unique_key="free")[0]
    enqueue_many(alice, queue=target, unique_key="taken")
    assert transitions.move_many(TaskQueue.objects.filter(pk__in=[plain.pk, free.pk, clash.pk]), target) == 2
    assert [fresh(task).queue_id for task in (plain, free, clash)] == [target.pk, target.pk, default_queue.pk]


def test_retry_delay_s_jitter_runs_from_half_the_step_to_the_whole_step():
    class Edge:
        def __init__(self, pick) -> None:
            self.pick = pick

        def uniform(self, low: float, high: float) -> float:
            return self.pick(low, high)

    lowest, highest = Edge(min), Edge(max)
    for attempt, base, step in [(1, 10, 10), (3, 10, 40), (9, 10, 100), (1, 5, 5), (1, 1, 1)]:  # odd steps too
        assert transitions.retry_delay(attempt=attempt, base=base, cap=100, rng=lowest) == step / 2
        assert transitions.retry_delay(attempt=attempt, base=base, cap=100, rng=highest) == step


def test_retry_delay_grows_exponentially_with_jitter_up_to_the_cap():
    rng = random.Random(3)
    for attempt, step in [(1, 10), (2, 20), (3, 40), (4, 80), (9, 100)]:
        delays = [transitions.retry_delay(attempt=attempt, base=10, cap=100, rng=rng) for _ in range(200)]
        assert step / 2 <= min(delays) and max(delays) <= step
        assert max(delays) - min(delays) > step / 4  # jittered, not constant


@pytest.mark.parametrize(
    ("is_mariadb", "version", "ok"),
    [
        (True, (10, 5, 22), False),
        (True, (10, 6, 0), True),
        (True, (11, 4), True),
        (False, (5, 7, 44), False),
        (False, (8, 0, 0), False),
        (False, (8, 0, 1), True),
        (False, (8, 4, 3), True),
    ],
)
def test_servers_without_skip_locked_are_refused(is_mariadb, version, ok):
    problem = skip_locked_problem(vendor="mysql", is_mariadb=is_mariadb, version=version)
    assert (problem is None) == ok
    if not ok:
        assert "SKIP LOCKED" in problem and "upgrade" in problem


def test_sqlite_needs_no_skip_locked():
    assert skip_locked_problem(vendor="sqlite") is None
    ensure_skip_locked(connection)


def test_deadlocks_are_retried_and_other_errors_are_not(monkeypatch):
    monkeypatch.setattr(db_errors.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError(1213, "Deadlock found when trying to get lock")
        return "done"

    assert db_errors.with_contention_retry(flaky, what="test") == "done"
    assert len(calls) == 3

    def broken():
        raise OperationalError(1146, "Table doesn't exist")

    with pytest.raises(OperationalError):
        db_errors.with_contention_retry(broken, what="test")


def _run_the_writes(owner, queue, now) -> None:
    """Enqueue one and three tasks, claim them, finish them with a mix of results, one of them held no more."""
    enqueue_many(owner, 1, queue=queue, payload={"one": "数据 🚀"}, run_at=now - timedelta(seconds=10))
    enqueue_many(owner, 3, queue=queue, payload={"n": [1, None]}, run_at=now - timedelta(seconds=5))
    tasks = transitions.claim(worker_id=f"{owner.username}:1", queues=[queue], limit=10, now=now).tasks
    first, taken_back, *rest = tasks
    TaskQueue.objects.filter(pk=taken_back.pk).update(status=TaskStatus.PENDING, claimed_by="")
    transitions.claim(worker_id=f"{owner.username}:1", queues=[queue], limit=1, now=now)
    results = [{"ok": "数据 🚀"}, 7, None, [1, {"a": None}]]
    outcomes = [
        (task, Outcome(task.pk, OutcomeKind.SUCCEEDED, result=r)) for task, r in zip(tasks, results, strict=True)
    ]
    transitions.record_outcomes(outcomes, worker_id=f"{owner.username}:1", queues={}, now=now)


def _rows(owner) -> list[tuple]:
    skip = {"id", "owner", "created_at", "claimed_by"}
    fields = [f.attname for f in TaskQueue._meta.concrete_fields if f.name not in skip]
    tasks = TaskQueue.objects.filter(owner=owner).order_by("id")
    null_results = list(tasks.filter(result__isnull=True).values_list("payload", "attempts"))
    counts = TaskStatusCount.objects.filter(owner=owner).values_list("queue_id", "status", "count")
    hourly = TaskHourlyStats.objects.filter(owner=owner).values_list(
        "queue_id", "hour", "created", "succeeded", "started"
    )
    return [list(tasks.values_list(*fields)), null_results, sorted(counts), sorted(hourly)]


@pytest.mark.parametrize("raw_task_sql", [True], ids=["compared"], indirect=True)
def test_the_hand_written_and_the_orm_statements_leave_identical_rows(alice, bob, default_queue, raw_task_sql):
    now = timezone.now()
    configured = {name for name in shortcuts.SHORTCUTS if shortcuts.enabled(name)}
    with shortcuts.override(configured | {"raw_task_sql"}):
        _run_the_writes(alice, default_queue, now)
    with shortcuts.override(configured - {"raw_task_sql"}):
        _run_the_writes(bob, default_queue, now)
    assert _rows(alice) == _rows(bob)
    assert [s for (s,) in TaskQueue.objects.filter(owner=alice).values_list("status")].count(TaskStatus.SUCCEEDED) == 3
