"""The worker's database round trips: database trouble costs a back-off, never a task or the worker."""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import DataError, IntegrityError, OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import metrics
from core.db.session import FORCED_ROLLBACK_MARKER
from tasks import transitions
from tasks.models import QueueConfig, TaskQueue, TaskStatus, WorkerProcess
from tasks.outcomes import Outcome, OutcomeKind
from tasks.tests.conftest import enqueue_many
from tasks.worker import db as worker_db
from tasks.worker.db import WorkerDatabase
from tasks.worker.held import HeldTasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def held() -> HeldTasks:
    return HeldTasks()


@pytest.fixture
def db() -> WorkerDatabase:
    return WorkerDatabase(worker_id="host:1:aaaaaa", queue_names=[], concurrency=1)


def test_claimed_tasks_wait_in_line_with_their_lease(db, held, alice, default_queue):
    tasks = enqueue_many(alice, 3)
    result = db.record_and_claim(held, flush=False, claim_limit=10)
    assert [t.pk for t in result.tasks] == held.ready() == [t.pk for t in tasks]
    spec = held.spec(tasks[0].pk)
    assert (spec.task_id, spec.task_type, spec.attempt, spec.cancel_requested) == (tasks[0].pk, "echo", 1, False)
    assert held.timeout_of(tasks[0].pk) == default_queue.task_timeout_seconds


def test_a_lost_connection_is_closed_counted_and_retried_later(db):
    connection.ensure_connection()
    reconnects = metrics.DB_RECONNECTS._value.get()

    def lost() -> None:
        raise OperationalError(2013, "Lost connection to server during query")

    assert db.call("testing", lost) is None
    assert connection.connection is None
    assert metrics.DB_RECONNECTS._value.get() == reconnects + 1
    assert db.call("testing", lambda: "too soon") is None  # backing off
    db.retry_now()
    assert (
        db.call("testing", lambda: QueueConfig.objects.get_or_create(name="after-back-off")[0].name) == "after-back-off"
    )


@pytest.mark.parametrize(
    "error",
    [
        DataError(1406, "Data too long for column"),
        pytest.param(OperationalError(1054, "Unknown column"), marks=pytest.mark.mysql),
    ],
)
def test_a_database_error_that_waiting_cannot_cure_is_raised(db, error):
    def broken() -> None:
        raise error

    with pytest.raises(type(error)):
        db.call("testing", broken)


def test_outcomes_that_could_not_be_written_are_kept_for_the_next_round(db, held, alice, default_queue, monkeypatch):
    task = enqueue_many(alice)[0]
    db.record_and_claim(held, flush=False, claim_limit=1)
    held.add_outcome(Outcome(task.pk, OutcomeKind.SUCCEEDED, result="ok"))

    def unavailable(*args, **kwargs):
        raise OperationalError(2006, "Server has gone away")

    with monkeypatch.context() as patch:
        patch.setattr(transitions, "record_and_claim", unavailable)
        db.record_and_claim(held, flush=True, claim_limit=0)
    assert held.has_outcome(task.pk) and task.pk in held

    db.retry_now()
    db.record_and_claim(held, flush=True, claim_limit=0)
    assert (held.outcomes_waiting(), len(held)) == (0, 0)
    assert TaskQueue.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED


def test_a_batch_the_database_refuses_is_recorded_one_by_one(db, held, alice, default_queue, monkeypatch):
    good, bad = enqueue_many(alice, 2)
    db.record_and_claim(held, flush=False, claim_limit=2)
    held.add_outcome(Outcome(good.pk, OutcomeKind.SUCCEEDED, result="fine"))
    held.add_outcome(Outcome(bad.pk, OutcomeKind.SUCCEEDED, result="refused"))
    real = transitions.record_and_claim

    def picky(*, results, **kwargs):
        if len(results) > 1 or results[0][1].result == "refused":
            raise IntegrityError(4025, "CONSTRAINT failed")
        return real(results=results, **kwargs)

    monkeypatch.setattr(transitions, "record_and_claim", picky)
    db.record_and_claim(held, flush=True, claim_limit=0)

    assert TaskQueue.objects.get(pk=good.pk).result == "fine"
    refused = TaskQueue.objects.get(pk=bad.pk)
    assert refused.status == TaskStatus.FAILED
    assert refused.error.startswith("the worker could not store this task's outcome: ")


def test_a_task_taken_back_by_another_worker_is_let_go(db, held, alice, default_queue):
    kept, lost = enqueue_many(alice, 2)
    db.record_and_claim(held, flush=False, claim_limit=2)
    TaskQueue.objects.filter(pk=lost.pk).update(claimed_by="host:2:bbbbbb")
    TaskQueue.objects.filter(pk=kept.pk).update(cancel_requested=True)

    assert db.renew_leases(held) == [kept.pk]
    assert list(held) == [kept.pk] and held.ready() == [kept.pk]
    assert held.spec(kept.pk).cancel_requested is True
    held.add_outcome(Outcome(lost.pk, OutcomeKind.SUCCEEDED))  # a late report is ignored
    assert not held.has_outcome(lost.pk)


def test_progress_is_written_only_for_tasks_still_held(db, held, alice, default_queue):
    task = enqueue_many(alice)[0]
    db.record_and_claim(held, flush=False, claim_limit=1)
    held.add_progress(task.pk, 40, "halfway-ish")
    held.add_progress(task.pk + 999, 10, "not ours")
    db.flush_progress(held)
    stored = TaskQueue.objects.get(pk=task.pk)
    assert (stored.progress, stored.progress_message) == (40, "halfway-ish")
    assert held.progress_due(math.inf) == {}  # nothing left to write


def test_connection_upkeep_runs_before_a_claim_at_most_once_a_second(db, held, alice, default_queue, monkeypatch):
    enqueue_many(alice, 3)
    upkeeps: list[float] = []
    clock = [1000.0]
    monkeypatch.setattr(worker_db, "close_old_connections", lambda: upkeeps.append(clock[0]))
    monkeypatch.setattr(worker_db, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    for _ in range(3):
        db.record_and_claim(held, flush=False, claim_limit=1)
        clock[0] += worker_db.SESSION_UPKEEP_SECONDS / 4
    assert upkeeps == [1000.0]
    clock[0] = 1000.0 + worker_db.SESSION_UPKEEP_SECONDS
    db.record_and_claim(held, flush=False, claim_limit=1)
    assert upkeeps == [1000.0, 1000.0 + worker_db.SESSION_UPKEEP_SECONDS]


def test_a_transaction_left_open_on_the_workers_connection_is_rolled_back_before_it_claims(
    db, held, alice, default_queue, caplog
):
    task = enqueue_many(alice)[0]
    with connection.cursor() as cursor:
        cursor.execute("BEGIN" if connection.vendor == "sqlite" else "START TRANSACTION")
        cursor.execute("UPDATE task_queue SET priority = 7 WHERE id = %s", [task.pk])
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        claim = db.record_and_claim(held, flush=False, claim_limit=1)
    assert FORCED_ROLLBACK_MARKER.format(context_id=f"worker-{db.worker_id}") in caplog.text
    assert [t.pk for t in claim.tasks] == [task.pk]
    assert TaskQueue.objects.get(pk=task.pk).priority == 0


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The database side's monotonic clock, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(worker_db, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def _searched_queues(db: WorkerDatabase, held: HeldTasks, limit: int = 1) -> set[int]:
    with CaptureQueriesContext(connection) as captured:
        db.record_and_claim(held, flush=False, claim_limit=limit)
    searched = set()
    for query in captured.captured_queries:
        match = re.search(r"queue_id\W+= (\d+)", query["sql"])
        if match and "LIMIT" in query["sql"]:  # the claim's locking read, one per queue searched
            searched.add(int(match.group(1)))
    return searched


def test_a_queue_found_idle_is_left_out_for_a_second_while_others_keep_the_worker_busy(
    db, held, alice, default_queue, clock
):
    idle = QueueConfig.objects.create(name="idle")
    enqueue_many(alice, 5)
    assert _searched_queues(db, held) == {default_queue.pk, idle.pk}
    enqueue_many(alice, 1, queue=idle)
    assert _searched_queues(db, held) == {default_queue.pk}
    # A claim that searched only the busy queues and found tasks there leaves the idle one out still.
    assert _searched_queues(db, held) == {default_queue.pk}
    clock[0] += worker_db.IDLE_QUEUE_RECHECK_SECONDS
    assert _searched_queues(db, held, limit=10) == {default_queue.pk, idle.pk}
    waiting = TaskQueue.objects.filter(pk__in=held.ready())
    assert set(waiting.values_list("queue_id", flat=True)) == {default_queue.pk, idle.pk}


def test_when_the_busy_queues_run_dry_every_queue_is_searched_before_nothing_counts_as_runnable(
    db, held, alice, default_queue, clock
):
    idle = QueueConfig.objects.create(name="idle")
    (first,) = enqueue_many(alice, 1)
    db.record_and_claim(held, flush=False, claim_limit=1)  # finds the idle queue empty
    (late,) = enqueue_many(alice, 1, queue=idle)
    claim = db.record_and_claim(held, flush=False, claim_limit=1)
    assert (claim.tasks, claim.partial) == ([], True)  # only the drained queue was searched
    claim = db.record_and_claim(held, flush=False, claim_limit=1)
    assert ([t.pk for t in claim.tasks], claim.partial) == ([late.pk], False)
    assert held.ready() == [first.pk, late.pk]


def test_a_heartbeat_only_refreshes_the_row_taking_back_lost_tasks_is_a_step_of_its_own(
    db, alice, default_queue, caplog
):
    long_ago = timezone.now() - timedelta(hours=1)
    lost = enqueue_many(
        alice,
        status=TaskStatus.RUNNING,
        claimed_by="gone:1:abcdef",
        attempts=1,
        max_attempts=3,
        lease_expires_at=long_ago,
        started_at=long_ago,
    )[0]
    WorkerProcess.objects.create(worker_id="gone:1:abcdef", hostname="gone", pid=1, last_heartbeat_at=long_ago)

    db.heartbeat(processed=7)
    assert WorkerProcess.objects.get(worker_id=db.worker_id).tasks_processed == 7
    assert TaskQueue.objects.get(pk=lost.pk).status == TaskStatus.RUNNING

    with caplog.at_level(logging.WARNING, logger="taskhub.worker"):
        db.recover_lost_tasks()
    assert TaskQueue.objects.get(pk=lost.pk).status == TaskStatus.PENDING
    assert f"took back 1 tasks whose worker stopped renewing their lease (#{lost.pk} pending)" in caplog.text

    with caplog.at_level(logging.INFO, logger="taskhub.worker"):
        db.prune_dead_workers()
    assert list(WorkerProcess.objects.values_list("worker_id", flat=True)) == [db.worker_id]
    assert "pruned 1 stale worker rows" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="taskhub.worker"):
        db.prune_dead_workers()
    assert "pruned" not in caplog.text


def test_the_back_off_grows_with_each_failure_up_to_its_longest_and_a_success_resets_it(db, clock):
    def unavailable() -> None:
        raise OperationalError(2006, "Server has gone away")

    waits = []
    for _ in range(len(worker_db.DB_RETRY_DELAYS) + 1):
        assert db.call("testing", unavailable) is None
        waits.append(db.available_at() - clock[0])
        clock[0] = db.available_at()  # tried again at the first moment allowed
    assert waits == pytest.approx([0.2, 0.5, 1.0, 2.0, 5.0, 5.0])
    assert db.call("testing", lambda: "back") == "back"
    assert db.call("testing", unavailable) is None
    assert db.available_at() - clock[0] == pytest.approx(0.2)


@pytest.mark.parametrize(
    "error",
    [
        OperationalError(1040, "Too many connections"),
        OperationalError(1203, "User already has more than 'max_user_connections' active connections"),
        OperationalError(1213, "Deadlock found when trying to get lock"),
        pytest.param(OperationalError("database is locked"), marks=pytest.mark.sqlite),
    ],
)
def test_a_full_server_contention_or_a_locked_sqlite_file_costs_a_back_off_not_a_reconnect_count(db, clock, error):
    reconnects, errors = metrics.DB_RECONNECTS._value.get(), metrics.DB_ERRORS.labels(kind="worker")._value.get()

    def fails() -> None:
        raise error

    assert db.call("testing", fails) is None
    assert db.available_at() == clock[0] + worker_db.DB_RETRY_DELAYS[0]
    assert metrics.DB_RECONNECTS._value.get() == reconnects
    assert metrics.DB_ERRORS.labels(kind="worker")._value.get() == errors + 1


@pytest.mark.sqlite
def test_a_sqlite_error_other_than_an_operational_one_is_raised(db):
    def broken() -> None:
        raise IntegrityError("UNIQUE constraint failed")

    with pytest.raises(IntegrityError):
        db.call("testing", broken)


def test_a_heartbeat_tells_a_draining_worker_to_drain_even_when_the_database_is_away(db, monkeypatch):
    db.register()
    assert db.heartbeat(processed=1) is False
    WorkerProcess.objects.filter(worker_id=db.worker_id).update(drain_requested_at=timezone.now())
    assert db.heartbeat(processed=2) is True
    db.retry_now()

    def unavailable(**kwargs):
        raise OperationalError(2006, "Server has gone away")

    monkeypatch.setattr(worker_db.row, "worker_heartbeat", unavailable)
    assert db.heartbeat(processed=3) is False
    db.retry_now()
    assert db.heartbeat(processed=3, draining=True) is True


def test_tasks_handed_back_while_the_database_is_away_stay_marked_for_it(db, held, alice, default_queue, monkeypatch):
    tasks = enqueue_many(alice, 2)
    db.record_and_claim(held, flush=False, claim_limit=2)
    held.release_later([t.pk for t in tasks])

    def unavailable(*args, **kwargs):
        raise OperationalError(2006, "Server has gone away")

    with monkeypatch.context() as patch:
        patch.setattr(transitions, "release", unavailable)
        db.hand_back(held)
    assert sorted(t.pk for t in held.to_hand_back()) == [t.pk for t in tasks]
    db.retry_now()
    db.hand_back(held)
    assert held.to_hand_back() == [] and len(held) == 0
    assert set(TaskQueue.objects.filter(pk__in=[t.pk for t in tasks]).values_list("status", flat=True)) == {
        TaskStatus.PENDING
    }


def test_an_idle_look_schedules_lease_recovery_and_pruning_for_when_they_fall_due(db, alice, clock, monkeypatch):
    now = timezone.now()
    started = time.monotonic()
    stale = timedelta(seconds=60)
    monkeypatch.setattr(worker_db.settings, "TASKHUB_WORKER_STALE_SECONDS", stale.total_seconds())
    monkeypatch.setattr(worker_db.random, "uniform", lambda low, high: high)
    enqueue_many(
        alice, status=TaskStatus.RUNNING, claimed_by="other:1:abcdef", lease_expires_at=now + timedelta(seconds=30)
    )
    WorkerProcess.objects.create(worker_id="other:1:abcdef", hostname="other", pid=1, last_heartbeat_at=now)
    recovered, pruned = [], []
    monkeypatch.setattr(db, "recover_lost_tasks", lambda: recovered.append(clock[0]))
    monkeypatch.setattr(db, "prune_dead_workers", lambda: pruned.append(clock[0]))
    monkeypatch.setattr(worker_db.timezone, "now", lambda: now)

    look = db.look()
    # By the database's clock, which (MariaDB's NOW(6)) read later than `now` by what the test took until then.
    late = time.monotonic() - started + 0.001
    assert look.lease_end == now + timedelta(seconds=30)
    offset = worker_db.SCHEDULE_TICK_OFFSET[1]
    # A margin past the lease's end: at its very instant the lease is not yet taken back (`<`).
    assert 1000.0 + 30 + offset - late <= db.due_upkeep_at() <= 1000.0 + 30 + offset + 0.001
    clock[0] = db.due_upkeep_at() - 0.01
    db.due_upkeep()
    assert (recovered, pruned) == ([], [])
    clock[0] = db.due_upkeep_at() + 0.0  # a clock reading equal to the moment (not the same float object)
    db.due_upkeep()
    assert (recovered, pruned) == ([clock[0]], [])
    assert 1000.0 + 60 + offset - late <= db.due_upkeep_at() <= 1000.0 + 60 + offset + 0.001
    clock[0] = db.due_upkeep_at() + 0.0
    db.due_upkeep()
    db.due_upkeep()  # once: the next look says when again
    assert (len(recovered), pruned) == (1, [clock[0]])
    assert db.due_upkeep_at() == math.inf


def test_a_queue_woken_by_name_is_searched_at_the_next_claim_and_an_unknown_name_rereads_the_queues(
    db, held, alice, default_queue, clock
):
    idle = QueueConfig.objects.create(name="idle")
    enqueue_many(alice, 5)
    db.record_and_claim(held, flush=False, claim_limit=1)  # finds the idle queue empty
    db.woken({"default"})
    assert _searched_queues(db, held) == {default_queue.pk}  # still left out
    db.woken({"idle"})
    assert _searched_queues(db, held) == {default_queue.pk, idle.pk}
    db.woken({None})  # any queue
    assert _searched_queues(db, held) == {default_queue.pk, idle.pk}

    late = QueueConfig.objects.create(name="late")
    db.woken({"late"})
    assert _searched_queues(db, held) == {default_queue.pk, idle.pk, late.pk}


def test_outcomes_are_logged_by_what_became_of_the_task(db, held, alice, default_queue, caplog):
    retried, failed, cancelled, done = enqueue_many(alice, 4, max_attempts=2)
    db.record_and_claim(held, flush=False, claim_limit=4)
    held.add_outcome(Outcome(retried.pk, OutcomeKind.RETRYABLE, error="flaky"))
    held.add_outcome(Outcome(failed.pk, OutcomeKind.PERMANENT, error="broken"))
    held.add_outcome(Outcome(cancelled.pk, OutcomeKind.CANCELLED, error="cancelled"))
    held.add_outcome(Outcome(done.pk, OutcomeKind.SUCCEEDED, result="ok"))
    with caplog.at_level(logging.INFO, logger="taskhub.worker"):
        db.record_and_claim(held, flush=True, claim_limit=0)
    logged = {record.getMessage().split(" (")[0]: record.levelno for record in caplog.records}
    assert logged == {
        f"task {retried.pk}": logging.WARNING,
        f"task {failed.pk}": logging.ERROR,
        f"task {cancelled.pk}": logging.INFO,
    }
    assert "attempt 1/2 failed, retrying at " in caplog.text and "failed after 1 attempts: " in caplog.text


def _unavailable(*args, **kwargs):
    raise OperationalError(2006, "Server has gone away")


def test_schedules_are_fired_once_a_second_just_after_the_wall_clock_s_whole_second(db, monkeypatch):
    now, wall = [1000.0], [5000.25]
    monkeypatch.setattr(worker_db, "time", SimpleNamespace(monotonic=lambda: now[0], time=lambda: wall[0]))
    monkeypatch.setattr(worker_db.random, "uniform", lambda low, high: high)
    ticks = []
    monkeypatch.setattr(worker_db.schedules, "schedules_fire_due", lambda: ticks.append(now[0]))
    db.fire_schedules()
    assert ticks == [1000.0]
    assert db.next_tick_at() == pytest.approx(1000.0 + 0.75 + worker_db.SCHEDULE_TICK_OFFSET[1])
    now[0], wall[0] = 1000.5, 5000.75
    db.fire_schedules()
    assert ticks == [1000.0]
    now[0] = db.next_tick_at()
    db.fire_schedules()
    assert ticks == [1000.0, now[0]]


def test_a_claim_brings_back_the_tick_each_second_after_an_idle_look_put_it_off(db, held, alice, default_queue, clock):
    worker_db.time.time = lambda: 5000.5  # the wall clock, half-way through a second
    enqueue_many(alice)
    db.look()  # no schedule: no tick until the next look or claim
    assert db.next_tick_at() == math.inf
    db.record_and_claim(held, flush=False, claim_limit=0)  # recording only: no claim
    assert db.next_tick_at() == math.inf
    db.record_and_claim(held, flush=False, claim_limit=1)
    assert clock[0] + 0.5 < db.next_tick_at() <= clock[0] + 0.5 + worker_db.SCHEDULE_TICK_OFFSET[1]


def test_progress_and_leases_wait_for_a_database_that_is_away(db, held, alice, default_queue, monkeypatch):
    task = enqueue_many(alice)[0]
    db.record_and_claim(held, flush=False, claim_limit=1)
    held.add_progress(task.pk, 30, "a third")
    with monkeypatch.context() as patch:
        patch.setattr(transitions, "write_progress", _unavailable)
        db.flush_progress(held)
    assert held.progress_due(math.inf) == {task.pk: (30, "a third")}
    with monkeypatch.context() as patch:
        patch.setattr(transitions, "renew_leases", _unavailable)
        db.retry_now()
        assert db.renew_leases(held) is None
    assert list(held) == [task.pk]
    db.retry_now()
    db.flush_progress(held)
    assert TaskQueue.objects.get(pk=task.pk).progress == 30
    assert held.progress_due(math.inf) == {}


def test_a_finished_task_s_last_progress_is_written_before_its_outcome_or_both_wait(
    db, held, alice, default_queue, monkeypatch
):
    task = enqueue_many(alice)[0]
    db.record_and_claim(held, flush=False, claim_limit=1)
    held.add_progress(task.pk, 100, "all done")
    held.add_outcome(Outcome(task.pk, OutcomeKind.SUCCEEDED, result="ok"))
    recorded = []
    real_record = transitions.record_and_claim
    monkeypatch.setattr(transitions, "record_and_claim", lambda **kw: recorded.append(kw) or real_record(**kw))
    with monkeypatch.context() as patch:
        patch.setattr(transitions, "write_progress", _unavailable)
        assert db.record_and_claim(held, flush=True, claim_limit=1) is None
    assert recorded == [] and held.has_outcome(task.pk)
    db.retry_now()
    db.record_and_claim(held, flush=True, claim_limit=0)
    stored = TaskQueue.objects.get(pk=task.pk)
    assert (stored.status, stored.progress, stored.progress_message) == (TaskStatus.SUCCEEDED, 100, "all done")


def test_a_database_lost_while_recording_one_by_one_keeps_every_outcome(db, held, alice, default_queue, monkeypatch):
    first, second = enqueue_many(alice, 2)
    db.record_and_claim(held, flush=False, claim_limit=2)
    held.add_outcome(Outcome(first.pk, OutcomeKind.SUCCEEDED, result="fine"))
    held.add_outcome(Outcome(second.pk, OutcomeKind.SUCCEEDED, result="fine"))

    def refused(**kwargs):
        raise IntegrityError(4025, "CONSTRAINT failed")

    monkeypatch.setattr(transitions, "record_and_claim", refused)
    monkeypatch.setattr(transitions, "record_outcomes", _unavailable)
    db.record_and_claim(held, flush=True, claim_limit=0)

    assert held.outcomes_waiting() == 2
    assert db.available_at() > 0
    assert set(TaskQueue.objects.values_list("status", flat=True)) == {TaskStatus.RUNNING}


def test_the_queues_are_read_again_once_a_poll_interval_or_a_second_has_passed(
    db, held, alice, default_queue, clock, settings
):
    settings.TASKHUB_POLL_INTERVAL_SECONDS = 0.5
    enqueue_many(alice, 5)
    db.record_and_claim(held, flush=False, claim_limit=1)
    late = QueueConfig.objects.create(name="late")
    clock[0] = 1000.25
    assert _searched_queues(db, held) == {default_queue.pk}
    clock[0] = 1000.0 + 0.5
    assert _searched_queues(db, held) == {default_queue.pk, late.pk}

    settings.TASKHUB_POLL_INTERVAL_SECONDS = 5.0  # a second at most, however long the poll
    later = QueueConfig.objects.create(name="later")
    clock[0] = 1001.4
    assert later.pk not in _searched_queues(db, held)
    clock[0] = 1000.5 + 1.0
    assert later.pk in _searched_queues(db, held)


def test_a_round_that_only_records_reads_no_queue_and_searches_none(db, held, alice, default_queue, clock):
    task = enqueue_many(alice, 2)[0]
    db.record_and_claim(held, flush=False, claim_limit=1)
    held.add_outcome(Outcome(task.pk, OutcomeKind.SUCCEEDED, result="ok"))
    clock[0] += 2 * worker_db.QUEUE_REFRESH_SECONDS  # the list of queues is due to be read again, by a claim
    with CaptureQueriesContext(connection) as captured:
        assert db.record_and_claim(held, flush=True, claim_limit=0) is None
    assert not [query["sql"] for query in captured.captured_queries if "queue_config" in query["sql"]]
    assert TaskQueue.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED


def test_a_claim_leaves_a_tick_due_within_the_second_where_it_is(db, held, alice, default_queue, monkeypatch):
    now, wall = [1000.0], [5000.25]
    monkeypatch.setattr(worker_db, "time", SimpleNamespace(monotonic=lambda: now[0], time=lambda: wall[0]))
    monkeypatch.setattr(worker_db.random, "uniform", lambda low, high: high)
    monkeypatch.setattr(worker_db.schedules, "schedules_fire_due", lambda: None)
    enqueue_many(alice, 2)
    db.fire_schedules()
    tick = db.next_tick_at()  # 5001.0 and its offset
    now[0], wall[0] = tick - 0.01, 5001.04  # past the whole second, before the tick
    db.record_and_claim(held, flush=False, claim_limit=1)
    assert db.next_tick_at() == tick


def test_a_lost_connection_that_refuses_to_close_is_forgotten(db, monkeypatch):
    connection.ensure_connection()

    def refuse() -> None:
        raise OperationalError(2006, "Server has gone away")

    monkeypatch.setattr(connection, "close", refuse)
    assert db.call("testing", refuse) is None
    assert connection.connection is None


@pytest.mark.mysql
def test_a_usable_server_starts_the_worker_without_a_warning(db, caplog):
    with caplog.at_level(logging.WARNING, logger="taskhub.worker"):
        db.ensure_usable()
    assert caplog.text == ""


def test_fired_or_skipped_schedules_are_logged_and_an_empty_tick_is_not(db, monkeypatch, caplog):
    now = [1000.0]
    monkeypatch.setattr(worker_db, "time", SimpleNamespace(monotonic=lambda: now[0], time=lambda: now[0]))
    ticks = iter(
        [
            SimpleNamespace(fired=1, skipped=0, lost=0),
            SimpleNamespace(fired=0, skipped=2, lost=0),
            SimpleNamespace(fired=0, skipped=0, lost=3),
        ]
    )
    monkeypatch.setattr(worker_db.schedules, "schedules_fire_due", lambda: next(ticks))
    caplog.set_level(logging.DEBUG, logger="taskhub.worker")
    for _ in range(3):
        db.fire_schedules()
        now[0] += 1.5  # past the next tick
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("schedules:")] == [
        "schedules: 1 fired, 0 skipped, 0 taken by another worker",
        "schedules: 0 fired, 2 skipped, 0 taken by another worker",
    ]


def test_a_roll_up_the_database_could_not_take_is_tried_again_at_the_next_heartbeat(db, monkeypatch):
    def unavailable() -> bool:
        raise OperationalError(2013, "Lost connection to server during query")

    monkeypatch.setattr(worker_db.hour_stats, "roll_up_hours", unavailable)
    db.roll_up_hours()  # the database away: no error, the turn stays due
    db.retry_now()
    calls = []
    monkeypatch.setattr(worker_db.hour_stats, "roll_up_hours", lambda: calls.append("rolled") or False)
    db.roll_up_hours()
    assert calls == ["rolled"]


def test_a_moment_already_past_falls_due_after_the_offset_from_now():
    clock = timezone.now()
    assert worker_db._at(100.0, clock - timedelta(seconds=5), clock, offset=0.3) == pytest.approx(100.3)
    assert worker_db._at(100.0, clock + timedelta(seconds=5), clock, offset=0.3) == pytest.approx(105.3)
    assert worker_db._at(100.0, None, clock) == math.inf


def test_upkeep_that_fell_due_while_the_worker_was_busy_runs_at_its_next_chance(db, clock, monkeypatch):
    ran = []
    monkeypatch.setattr(db, "recover_lost_tasks", lambda: ran.append("recover"))
    monkeypatch.setattr(db, "prune_dead_workers", lambda: ran.append("prune"))
    db._recover_at, db._prune_at = clock[0] - 5.0, clock[0] - 0.5  # both overdue, not due this instant
    db.due_upkeep()
    assert ran == ["recover", "prune"]
    assert db.due_upkeep_at() == math.inf


def test_a_claim_that_searched_every_one_of_many_queues_is_not_partial(db):
    # Lengths compared by value: beyond 256 (CPython's shared small ints) two equal counts are
    # different objects.
    queues = [SimpleNamespace(pk=pk, name=f"q{pk}") for pk in range(300)]
    db._runnable = list(queues)
    claim = transitions.Claim(tasks=[SimpleNamespace(pk=1)])
    db._note_idle(claim, list(queues), 1000.0)
    assert claim.partial is False
    claim = transitions.Claim(tasks=[SimpleNamespace(pk=1)])
    db._note_idle(claim, queues[:-1], 1000.0)
    assert claim.partial is True


def test_when_the_queues_searched_run_dry_every_queue_is_searched_at_the_next_claim(db, clock, held):
    a, b, c = (SimpleNamespace(pk=pk, name=name) for pk, name in ((1, "a"), (2, "b"), (3, "c")))
    db._runnable, db._queues_read_at = [a, b, c], clock[0]
    db._idle_until[b.pk] = clock[0] + 0.5  # found idle a moment ago, so left out of this claim
    claim = transitions.Claim(empty_queues={c.pk})  # nothing claimed: a held back by its limits, c empty
    db._note_idle(claim, [a, c], clock[0])
    assert claim.partial
    assert db._queues_to_search(held) == [a, b, c]


def test_a_claim_that_found_nothing_tells_when_the_next_task_is_due(db, held, alice, default_queue):
    due = timezone.now() + timedelta(minutes=5)
    enqueue_many(alice, run_at=due)
    claim = db.record_and_claim(held, flush=False, claim_limit=10)
    assert (claim.tasks, claim.next_run_at) == ([], due)  # the loop sleeps until then, not a whole poll
