"""The Worker class run in this process (its handlers still run in forked child processes)."""

from __future__ import annotations

import math
import signal
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection, connections
from django.utils import timezone

from tasks import services
from tasks.models import QueueConfig, TaskQueue, TaskStatus, TaskStatusCount, WorkerProcess
from tasks.outcomes import ERROR_MAX_CHARS, OutcomeKind
from tasks.tests.conftest import enqueue_many
from tasks.transitions import Claim
from tasks.worker import Worker, loop
from tasks.worker.loop import IDLE_BACKOFF_START, MAX_WAIT

pytestmark = pytest.mark.django_db(transaction=True)


def statuses(**filters) -> dict[int, str]:
    return dict(TaskQueue.objects.filter(**filters).values_list("pk", "status"))


def run_until(worker: Worker, condition, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.run_one(), "the worker stopped early"
        assert time.monotonic() < deadline, "condition not reached in time"


def test_burst_runs_every_task_stores_results_and_unregisters(alice, default_queue):
    tasks = [enqueue_many(alice, payload={"n": n, "text": "数据 🚀"})[0] for n in range(30)]
    stale = WorkerProcess.objects.create(
        worker_id="gone:1:abc", hostname="gone", pid=1, last_heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    Worker(burst=True, concurrency=2).run(install_signal_handlers=False)
    for task in tasks:
        stored = TaskQueue.objects.get(pk=task.pk)
        assert (stored.status, stored.result, stored.attempts) == (TaskStatus.SUCCEEDED, stored.payload, 1)
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.SUCCEEDED).count == 30
    assert not WorkerProcess.objects.filter(pk=stale.pk).exists(), "stale rows of dead workers are pruned"
    assert not WorkerProcess.objects.exists(), "a worker deletes its own row on a clean exit"


def test_a_running_worker_is_registered_and_heartbeats(alice, default_queue, settings):
    from accounts.fingerprint import key_fingerprint

    settings.TASKHUB_WORKER_HEARTBEAT_SECONDS = 0.1
    enqueue_many(alice, 3)
    worker = Worker(queues=["default"], concurrency=2)
    worker.start()
    try:
        row = WorkerProcess.objects.get(worker_id=worker.worker_id)
        assert (row.queues, row.concurrency) == (["default"], 2)
        assert row.key_fingerprint == key_fingerprint(settings.JWT_SECRET_KEY)
        run_until(worker, lambda: WorkerProcess.objects.get(worker_id=worker.worker_id).tasks_processed == 3)
        assert WorkerProcess.objects.get(worker_id=worker.worker_id).last_heartbeat_at > row.last_heartbeat_at
    finally:
        worker.close()
    assert not WorkerProcess.objects.exists()


@pytest.mark.parametrize(
    ("task_type", "error"),
    [("test.unserialisable", "not JSON-serialisable"), ("no.such.type", "unknown task type 'no.such.type'")],
)
def test_a_task_retrying_cannot_help_fails_at_once_with_a_clear_error(alice, default_queue, task_type, error):
    task = enqueue_many(alice, task_type=task_type, max_attempts=3)[0]
    Worker(burst=True).run(install_signal_handlers=False)
    stored = TaskQueue.objects.get(pk=task.pk)
    assert (stored.status, stored.attempts) == (TaskStatus.FAILED, 1)
    assert error in stored.error


def test_a_failing_handler_ends_failed_with_a_bounded_traceback(alice, default_queue):
    task = enqueue_many(alice, task_type="fail", payload={"message": "boom " + "x" * 50_000}, max_attempts=1)[0]
    Worker(burst=True).run(install_signal_handlers=False)
    stored = TaskQueue.objects.get(pk=task.pk)
    assert stored.status == TaskStatus.FAILED
    assert stored.error.startswith("TaskFailure: boom xxx")
    assert "Traceback (most recent call last)" in stored.error
    assert 'raise TaskFailure(str(payload.get("message"' in stored.error  # the tail, where it raised
    assert len(stored.error) <= ERROR_MAX_CHARS


def test_a_handler_over_its_timeout_is_killed_and_the_worker_carries_on(alice):
    queue = QueueConfig.objects.create(name="short", task_timeout_seconds=1)
    hung = enqueue_many(alice, queue=queue, task_type="test.hang", priority=10, max_attempts=1)[0]
    after = enqueue_many(alice, 5, queue=queue)
    Worker(burst=True, concurrency=1).run(install_signal_handlers=False)
    stored = TaskQueue.objects.get(pk=hung.pk)
    assert stored.status == TaskStatus.FAILED
    assert "task timeout (1s)" in stored.error
    assert set(statuses(pk__in=[t.pk for t in after]).values()) == {TaskStatus.SUCCEEDED}


def test_tasks_whose_leases_were_not_renewed_are_stopped_a_margin_before_the_leases_end_and_let_go(
    alice, default_queue, caplog
):
    running = enqueue_many(alice, task_type="test.hang", priority=10)[0]
    waiting, later = enqueue_many(alice, 2)
    worker = Worker(concurrency=1, prefetch=2, batch_size=2)
    worker.start()
    try:
        run_until(worker, lambda: [task_id for _, task_id, _ in worker.pool.running()] == [running.pk])
        child = next(iter(worker.pool))
        assert child.unfinished() == [running.pk, waiting.pk]  # the second in line behind the first
        for task_id in (running.pk, waiting.pk):  # not renewed: now within the lease's 1 s margin
            worker.held._tasks[task_id].lease_deadline = time.monotonic() + 0.5
        worker.run_one()
        assert child.exitcode == -signal.SIGKILL
        assert running.pk not in worker.held and waiting.pk not in worker.held
        run_until(worker, lambda: TaskQueue.objects.get(pk=later.pk).status == TaskStatus.SUCCEEDED)
    finally:
        worker.close()
    # Left running for the worker that takes them back after their leases: no attempt recorded, no failure.
    assert statuses(pk__in=[running.pk, waiting.pk]) == {running.pk: TaskStatus.RUNNING, waiting.pk: TaskStatus.RUNNING}
    assert f"task {running.pk}: its lease could not be renewed; stopped it and let it go" in caplog.text
    assert f"task {waiting.pk}: its lease could not be renewed; letting it go" in caplog.text
    assert "ran past its timeout" not in caplog.text


def test_a_crashed_child_is_replaced_and_its_task_retried_then_failed(alice, default_queue):
    crashed = enqueue_many(alice, task_type="test.crash", priority=10, max_attempts=1)[0]
    after = enqueue_many(alice, 3)
    Worker(burst=True).run(install_signal_handlers=False)
    stored = TaskQueue.objects.get(pk=crashed.pk)
    assert stored.status == TaskStatus.FAILED
    assert "died (exit code 3)" in stored.error
    assert set(statuses(pk__in=[t.pk for t in after]).values()) == {TaskStatus.SUCCEEDED}


def test_shutdown_finishes_the_running_task_and_hands_back_the_rest(alice, default_queue):
    tasks = enqueue_many(alice, 4, task_type="sleep", payload={"seconds": 1})
    worker = Worker(concurrency=1, prefetch=4)
    worker.start()
    try:
        # Running for sure: its handler has reported progress.
        run_until(worker, lambda: TaskQueue.objects.filter(progress_message__startswith="slept").exists())
        worker.shutdown("test")
        while worker.run_one():
            pass
    finally:
        worker.close()
    stored = list(TaskQueue.objects.filter(pk__in=[t.pk for t in tasks]).order_by("pk"))
    assert [t.status for t in stored] == [TaskStatus.SUCCEEDED] + [TaskStatus.PENDING] * 3
    assert [t.attempts for t in stored[1:]] == [0, 0, 0]
    assert {t.claimed_by for t in stored[1:]} == {""}


def test_a_task_cancelled_while_queued_in_a_child_ends_cancelled_without_running(alice, default_queue, settings):
    settings.TASKHUB_WORKER_HEARTBEAT_SECONDS = 0.1
    first, queued = enqueue_many(alice, 2, task_type="sleep", payload={"seconds": 1.5})
    worker = Worker(concurrency=1, prefetch=2)
    worker.start()
    try:
        run_until(worker, lambda: TaskQueue.objects.filter(pk=first.pk, progress_message__startswith="slept").exists())
        assert services.task_cancel(task=queued, by=alice) is services.CancelOutcome.CANCEL_REQUESTED
        run_until(worker, lambda: not TaskQueue.objects.filter(status=TaskStatus.RUNNING).exists())
    finally:
        worker.close()
    assert TaskQueue.objects.get(pk=first.pk).status == TaskStatus.SUCCEEDED
    cancelled = TaskQueue.objects.get(pk=queued.pk)
    assert (cancelled.status, cancelled.progress_message) == (TaskStatus.CANCELLED, "cancelled before it started")


def test_max_tasks_runs_exactly_that_many(alice, default_queue):
    enqueue_many(alice, 10)
    Worker(max_tasks=3, concurrency=2).run(install_signal_handlers=False)
    assert sorted(statuses().values()).count(TaskStatus.SUCCEEDED) == 3
    assert TaskQueue.objects.filter(status=TaskStatus.PENDING, attempts=0).count() == 7


def test_a_worker_stops_once_it_has_run_its_max_tasks_however_many(default_queue):
    worker = Worker(queues=["default"], max_tasks=int("1000"))
    worker.held._processed = 999
    worker._done()
    assert worker._stop_reason is None
    worker.held._processed += 1  # not the interned small int: compared by value
    worker._done()
    assert worker._stop_reason == "--max-tasks 1000 reached"


def test_an_idle_worker_sleeps_between_rounds_and_not_at_all_once_asked_to_stop(default_queue):
    worker = Worker(queues=["default"])
    worker._next_heartbeat = worker._next_claim = worker.db._next_tick = time.monotonic() + 60  # nothing due
    assert 0 < worker._wait_timeout() <= MAX_WAIT
    worker.shutdown("test")
    assert worker._wait_timeout() == 0


def test_progress_reports_reach_the_task_row(alice, default_queue):
    task = enqueue_many(alice, task_type="sleep", payload={"seconds": 1.5})[0]
    worker = Worker(concurrency=1)
    worker.start()
    try:
        run_until(worker, lambda: 0 < TaskQueue.objects.get(pk=task.pk).progress < 100)
        assert TaskQueue.objects.get(pk=task.pk).progress_message.startswith("slept ")
        run_until(worker, lambda: TaskQueue.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED)
    finally:
        worker.close()
    assert TaskQueue.objects.get(pk=task.pk).progress_message == "done"


@pytest.mark.mysql
def test_the_worker_carries_on_after_its_connection_is_killed_mid_task(alice, default_queue):
    tasks = enqueue_many(alice, 3, task_type="sleep", payload={"seconds": 0.5})
    observer = connections.create_connection("default")  # this thread's connection is the worker's

    def succeeded() -> int:
        with observer.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM task_queue WHERE status = 'succeeded'")
            return cursor.fetchone()[0]

    worker = Worker(concurrency=1)
    worker.start()
    try:
        run_until(worker, lambda: TaskQueue.objects.filter(progress_message__startswith="slept").exists())
        killed = connection.connection.thread_id()
        with observer.cursor() as cursor:
            cursor.execute("KILL %s", [killed])
        connection.health_check_done = True  # no ping before reuse: the worker meets the dead connection
        deadline = time.monotonic() + 60
        while succeeded() < len(tasks):
            assert worker.run_one() and time.monotonic() < deadline
        assert connection.connection.thread_id() != killed
    finally:
        worker.close()
        observer.close()
    assert set(statuses().values()) == {TaskStatus.SUCCEEDED}


def test_a_task_that_came_due_just_after_the_claims_clock_reading_is_claimed_at_once(default_queue):
    """A worker woken for a run_at may claim a hair before it: it claims again at once, no back-off."""
    worker = Worker(queues=["default"], concurrency=1)
    now = timezone.now()

    came_due = Claim(next_run_at=now - timedelta(milliseconds=1), as_of=now - timedelta(milliseconds=2))
    assert worker._idle_wait(came_due) == 0.0
    assert worker._run_at_due

    # Due before the claim looked, yet not claimed: another worker holds it; back off a little.
    taken = Claim(next_run_at=now - timedelta(seconds=1), as_of=now)
    worker._idle_wait(taken)
    assert IDLE_BACKOFF_START / 2 < worker._next_run_at - time.monotonic() <= IDLE_BACKOFF_START

    later = Claim(next_run_at=timezone.now() + timedelta(seconds=0.5), as_of=timezone.now())
    worker._idle_wait(later)
    assert 0.3 < worker._next_run_at - time.monotonic() <= 0.5


def test_an_idle_worker_backs_off_doubling_from_50_ms_to_its_poll_interval_or_a_jittered_poll_with_wake_ups(
    default_queue, monkeypatch
):
    drawn: list[tuple[float, float]] = []
    monkeypatch.setattr(loop, "random", SimpleNamespace(uniform=lambda low, high: drawn.append((low, high)) or high))
    worker = Worker(queues=["default"], poll_interval=0.3)
    waits = []
    for idle_claims in range(5):
        worker._idle_claims = idle_claims
        waits.append(worker._idle_wait(Claim()))
    assert drawn == [(0.025, 0.05), (0.05, 0.1), (0.1, 0.2), (0.15, 0.3), (0.15, 0.3)]  # the upper half of each step
    assert waits == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert not worker._run_at_due

    drawn.clear()
    worker._wakeups = SimpleNamespace(live=True)  # a new task wakes it: the whole poll interval, 10 % jitter
    assert worker._idle_wait(Claim()) == pytest.approx(0.33)
    assert drawn == [(0.3, pytest.approx(0.33))]


def test_a_claim_held_back_by_a_rate_limit_comes_back_when_its_bucket_has_a_token_but_not_within_10_ms(
    default_queue, monkeypatch
):
    monkeypatch.setattr(loop, "random", SimpleNamespace(uniform=lambda low, high: high))
    worker = Worker(queues=["default"], poll_interval=5)
    worker._idle_claims = 10  # backed off to the poll interval
    assert worker._idle_wait(Claim(held_back=True, retry_in=0.7)) == 0.7
    assert worker._idle_wait(Claim(held_back=True, retry_in=0.001)) == pytest.approx(0.01)
    assert worker._idle_wait(Claim(held_back=True, retry_in=9)) == 5


def test_an_idle_worker_claims_again_at_the_next_run_at_when_it_comes_before_the_back_off_ends(
    default_queue, monkeypatch
):
    monkeypatch.setattr(loop, "random", SimpleNamespace(uniform=lambda low, high: high))
    worker = Worker(queues=["default"], poll_interval=5)
    worker._idle_claims = 10  # backed off to the poll interval
    soon = Claim(next_run_at=timezone.now() + timedelta(seconds=0.5), as_of=timezone.now())
    assert 0.3 < worker._idle_wait(soon) <= 0.5
    assert worker._run_at_due  # then claimed without a look first
    assert worker._idle_wait(Claim(next_run_at=timezone.now() + timedelta(seconds=30))) == 5
    assert not worker._run_at_due


def done_after(seconds: float) -> tuple:
    return ("done", 1, OutcomeKind.SUCCEEDED.value, None, "", 100.0, 100.0 + seconds)


def test_each_child_is_sent_about_100_ms_of_work_ahead_by_a_moving_average_of_task_durations(default_queue):
    worker = Worker(queues=["default"], batch_size=7)
    assert worker._depth() == 1  # nothing measured yet
    worker._handle([done_after(0.03)])
    assert worker._depth() == 3  # 0.1 / 0.03
    worker._handle([done_after(0.08)])  # 0.8 * 0.03 + 0.2 * 0.08 = 0.04
    assert worker._depth() == 2
    worker._handle([done_after(5.0)])  # about a second: still one at a time
    assert worker._depth() == 1

    fast = Worker(queues=["default"], batch_size=7)
    fast._handle([done_after(0.0)])
    assert fast._depth() == 14  # at most two batches
    assert Worker(queues=["default"], prefetch=5)._depth() == 5


class FakeHeld:
    """The counts of the book of held tasks that the claim and flush decisions read."""

    def __init__(self, *, active=0, ready=0, processed=0, waiting=0, waiting_since=None):
        self._active, self._ready, self._processed, self._waiting = active, ready, processed, waiting
        self._since = time.monotonic() if waiting_since is None else waiting_since
        self.released = False

    def active(self) -> int:
        return self._active

    def ready_count(self) -> int:
        return self._ready

    def processed(self) -> int:
        return self._processed

    def __len__(self) -> int:
        return self._active

    def outcomes_waiting(self) -> int:
        return self._waiting

    def outcomes_waiting_since(self) -> float:
        return self._since

    def release_waiting(self) -> None:
        self.released = True


def fake_pool(*, busy=True, idle_child=False, running=0) -> SimpleNamespace:
    return SimpleNamespace(
        busy=lambda: busy,
        has_idle_child=lambda: idle_child,
        running=lambda: iter([(None, n, 0.0) for n in range(running)]),
        stop=lambda: None,
    )


def test_outcomes_are_flushed_once_a_batch_of_them_waits_and_not_before_while_children_are_busy(default_queue):
    worker = Worker(queues=["default"], batch_size=5)
    worker.pool = fake_pool(busy=True)
    for waiting, flush in [(0, False), (1, False), (4, False), (5, True), (6, True)]:
        worker.held = FakeHeld(waiting=waiting)  # just arrived: the flush delay has not passed
        assert worker._flush_due() is flush, waiting
    worker.held = FakeHeld(waiting=1, waiting_since=time.monotonic() - loop.FLUSH_DELAY)
    assert worker._flush_due() is True  # waited long enough
    worker.held = FakeHeld(waiting=1)
    worker.pool = fake_pool(busy=False)
    assert worker._flush_due() is True  # no child busy: nothing more is coming soon


def test_room_is_claimed_only_once_half_a_batch_of_places_is_free_unless_a_child_starves(default_queue):
    worker = Worker(queues=["default"], concurrency=2, prefetch=4, batch_size=10)  # 8 places, threshold 4
    worker.pool = fake_pool(idle_child=False)
    rooms = {}
    for active in (8, 7, 5, 4, 0):
        worker.held = FakeHeld(active=active, ready=1)
        rooms[active] = worker._room()
    assert rooms == {8: 0, 7: 0, 5: 0, 4: 4, 0: 8}
    worker.pool = fake_pool(idle_child=True)
    worker.held = FakeHeld(active=7, ready=0)  # a child is idle and nothing is ready for it
    assert worker._room() == 1
    worker.held = FakeHeld(active=7, ready=1)
    assert worker._room() == 0


def test_the_claim_limit_is_nothing_while_draining_or_backing_off_except_an_empty_burst_worker(default_queue):
    worker = Worker(queues=["default"], concurrency=2, prefetch=2, batch_size=4)
    worker.pool = fake_pool()
    worker.held = FakeHeld(active=0)
    assert worker._claim_limit() == 4
    worker._draining = True
    assert worker._claim_limit() == 0
    worker._draining = False
    worker._next_claim = time.monotonic() + 60  # backing off
    assert worker._claim_limit() == 0
    worker.burst = True  # a burst worker holding nothing claims at once: it exits when nothing is left
    assert worker._claim_limit() == 4
    worker.held = FakeHeld(active=2)
    assert worker._claim_limit() == 0


def test_a_stopping_worker_logs_how_many_tasks_run_on_and_how_many_go_back(default_queue, caplog):
    worker = Worker(queues=["default"])
    worker.grace_seconds = 7
    worker._stop_reason = "test"
    caplog.set_level("INFO", logger="taskhub.worker")
    for active, running, handed_back in [(5, 2, 3), (2, 2, 0), (1, 2, 0)]:
        worker.held, worker.pool = FakeHeld(active=active), fake_pool(running=running)
        caplog.clear()
        before = time.monotonic()
        worker._begin_stop()
        assert before <= worker._grace_deadline - 7 <= time.monotonic()  # the grace runs from now
        assert worker.held.released
        assert caplog.messages == [
            f"stopping (test): waiting up to 7s for {running} running tasks, handing back {handed_back} not started"
        ]


def test_schedules_fire_in_each_round_of_a_worker_but_not_once_it_drains(default_queue, monkeypatch):
    worker = Worker(queues=["default"])
    fired = []
    monkeypatch.setattr(worker.db, "fire_schedules", lambda: fired.append(worker._draining))
    worker.start()
    try:
        worker.run_one(timeout=0)
        assert fired == [False]
        worker._draining = True
        worker.run_one(timeout=0)
        assert fired == [False]
    finally:
        worker.close()


def test_an_idle_worker_wakes_for_the_next_schedule_tick_unless_it_drains(default_queue):
    worker = Worker(queues=["default"])
    worker._next_heartbeat = worker._next_claim = time.monotonic() + 60
    worker.db._next_tick = time.monotonic() + 0.2
    assert 0.1 < worker._wait_timeout() <= 0.2
    worker._draining = True
    assert worker._wait_timeout() == MAX_WAIT


def test_an_idle_worker_with_wake_ups_beats_every_third_of_the_stale_limit(default_queue, settings):
    settings.TASKHUB_WORKER_HEARTBEAT_SECONDS = 1
    settings.TASKHUB_WORKER_STALE_SECONDS = 30
    assert Worker(queues=["default"]).idle_heartbeat_seconds == 10  # two beats may be missed before stale
    settings.TASKHUB_WORKER_HEARTBEAT_SECONDS = 15
    assert Worker(queues=["default"]).idle_heartbeat_seconds == 15  # never more often than when busy


def idle_worker_with_wake_ups(calls: list[str], run_at=None) -> Worker:
    """A worker idle with wake-ups live, whose database answers a look with `run_at` and records each call."""
    worker = Worker(queues=["default"], poll_interval=2)
    worker._wakeups = SimpleNamespace(live=True, take=lambda: set())
    worker.pool = []  # no children: the heartbeat's memory is this process's
    worker.db = SimpleNamespace(
        heartbeat=lambda **_: calls.append("beat") and False,
        look=lambda: calls.append("look") or SimpleNamespace(run_at=run_at),
        woken=lambda queues: None,
    )
    return worker


def wake(worker: Worker) -> None:
    """A wake-up for the worker's queue arrives and is taken."""
    worker._wakeups.take = lambda: {"default"}
    worker._take_wakeups()
    worker._wakeups.take = lambda: set()


def test_an_idle_worker_looks_only_after_a_claim_found_nothing(default_queue):
    worker = idle_worker_with_wake_ups([])
    assert not worker._may_peek()  # its first poll claims
    worker._idle_claims = 1
    assert worker._may_peek()
    wake(worker)
    assert not worker._may_peek()  # woken: it claims at once


def test_an_idle_poll_gives_its_turn_to_a_due_heartbeat_but_never_two_turns_in_a_row(default_queue):
    calls: list[str] = []
    worker = idle_worker_with_wake_ups(calls)
    worker._next_heartbeat = 0.0  # due at the first poll: the heartbeat takes it
    worker._peek()
    assert calls == ["beat"]
    calls.clear()
    worker._next_heartbeat = time.monotonic() + 60  # not due: the poll looks
    assert worker._peek() is False
    assert calls == ["look"]

    worker._next_heartbeat = 0.0  # due: this poll's turn is the heartbeat's
    now = time.monotonic()
    assert worker._peek() is False
    assert calls == ["look", "beat"]
    assert 2 <= worker._next_claim - now <= 2.2 + 0.1  # the next poll, a jittered poll interval on
    worker._next_heartbeat = 0.0  # due again at once: the next poll looks all the same
    worker._peek()
    assert calls == ["look", "beat", "look"]


def test_an_idle_look_claims_a_task_already_due_and_otherwise_waits_for_the_next_run_at(default_queue):
    worker = idle_worker_with_wake_ups([], run_at=timezone.now() - timedelta(seconds=1))
    worker._next_heartbeat = time.monotonic() + 60
    assert worker._peek() is True

    worker = idle_worker_with_wake_ups([], run_at=timezone.now() + timedelta(seconds=1))
    worker._next_heartbeat = time.monotonic() + 60
    now = time.monotonic()
    assert worker._peek() is False
    assert 0.8 < worker._next_run_at - now <= 1.0
    assert 0.8 < worker._next_claim - now <= 1.0  # before the next poll: claimed at its run_at
    assert worker._run_at_due


def test_the_moving_average_of_task_durations_weighs_the_newest_a_fifth(default_queue):
    worker = Worker(queues=["default"])
    for seconds, average in [(0.03, 0.03), (0.0, 0.024), (2.0, 0.4192)]:
        worker._handle([done_after(seconds)])
        assert worker._avg_seconds == pytest.approx(average)
    early = Worker(queues=["default"])  # a task that ran longer than the clock had run before it started
    early._handle([("done", 1, OutcomeKind.SUCCEEDED.value, None, "", 10.0, 35.0)])
    assert early._avg_seconds == pytest.approx(25.0)


class RecordingHeld:
    """The calls a worker makes on its book of held tasks when a child exits or a deadline passes."""

    def __init__(self, *, lease_expired=False, renewal_due=False, active=0) -> None:
        self.calls: list[tuple] = []
        self._lease_expired, self._renewal_due, self._active = lease_expired, renewal_due, active

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, *args))

    def lease_expired(self, task_id, now) -> bool:
        return self._lease_expired

    def renewal_due(self, now, *, heartbeat) -> bool:
        return self._renewal_due

    deadline = 0.0  # long past

    def deadline_of(self, task_id, started) -> float:
        return self.deadline

    def timeout_of(self, task_id) -> int:
        return 5

    def task_type_of(self, task_id) -> str:
        return "test.hang"

    def ready_past_lease(self, now) -> list:
        return []

    def active(self) -> int:
        return self._active

    def outcomes_waiting(self) -> int:
        return 0

    def processed(self) -> int:
        return 0

    def __len__(self) -> int:
        return self._active

    def outcomes(self) -> list:
        return [call[1] for call in self.calls if call[0] == "add_outcome"]


def exited_child(*unfinished: int, was_running: bool, exitcode: int) -> SimpleNamespace:
    return SimpleNamespace(
        unfinished=lambda: list(unfinished),
        stopped_cleanly=lambda: False,
        was_running=lambda: was_running,
        exitcode=exitcode,
        pid=4242,
    )


def test_a_child_that_died_before_starting_its_line_fails_none_of_it(default_queue):
    worker = Worker(queues=["default"])
    worker.held, worker.pool = RecordingHeld(), SimpleNamespace(fill=lambda: None)
    worker._on_child_exit(exited_child(7, 8, was_running=False, exitcode=-signal.SIGKILL), [])
    assert worker.held.outcomes() == []
    assert worker.held.calls == [("requeue_front", [7, 8])]


def test_a_child_its_lease_watchdog_ended_lets_its_task_go_without_an_outcome(default_queue):
    worker = Worker(queues=["default"])
    worker.held, worker.pool = RecordingHeld(lease_expired=True), SimpleNamespace(fill=lambda: None)
    worker._on_child_exit(exited_child(7, 8, was_running=True, exitcode=-signal.SIGALRM), [])
    assert worker.held.outcomes() == []
    assert worker.held.calls == [("drop", 7), ("requeue_front", [8])]
    worker.held = RecordingHeld(lease_expired=True)  # any other death is the task's: it is retried
    worker._on_child_exit(exited_child(7, 8, was_running=True, exitcode=-signal.SIGTERM), [])
    assert [(o.task_id, o.kind) for o in worker.held.outcomes()] == [(7, OutcomeKind.RETRYABLE)]
    worker.held = RecordingHeld(lease_expired=True)
    worker._on_child_exit(exited_child(7, 8, was_running=True, exitcode=-signal.SIGKILL), [])
    assert [(o.task_id, o.kind) for o in worker.held.outcomes()] == [(7, OutcomeKind.RETRYABLE)]


def _past_deadline(worker: Worker, task_id: int, unfinished: list[int]) -> list:
    child = SimpleNamespace(
        receive=lambda: [], is_running=lambda pk: pk == task_id, unfinished=lambda: unfinished, pid=1
    )
    worker.held = RecordingHeld()
    worker.pool = SimpleNamespace(running=lambda: iter([(child, task_id, 0.0)]), kill=lambda c: [], fill=lambda: None)
    worker._enforce_deadlines()
    return [(o.task_id, o.error.split(":")[0]) for o in worker.held.outcomes()]


def test_a_task_past_its_timeout_is_the_one_failed_whatever_its_id(default_queue):
    worker = Worker(queues=["default"])
    task_id = int("1000")  # an id the size a database gives, not an object shared with the child's list
    assert _past_deadline(worker, task_id, [1000, 1001]) == [(1000, "TaskTimeout")]
    # It finished in the last instant: the one behind it, cut short by the kill, is retried.
    assert _past_deadline(worker, task_id, [1001]) == [(1001, "interrupted")]
    assert _past_deadline(worker, task_id, [1001, 1002]) == [(1001, "interrupted")]
    assert ("requeue_front", [1002]) in worker.held.calls
    assert _past_deadline(worker, task_id, [999]) == [(999, "interrupted")]  # a line need not be in id order
    assert _past_deadline(worker, task_id, []) == []


def test_a_task_is_stopped_at_its_deadline_not_an_instant_later(default_queue, monkeypatch):
    worker = Worker(queues=["default"])
    monkeypatch.setattr(loop.time, "monotonic", lambda: 50.0)
    monkeypatch.setattr(RecordingHeld, "deadline", 50.0)
    assert _past_deadline(worker, 7, [7]) == [(7, "TaskTimeout")]


class ChildlessPool(list):
    """No children (the heartbeat's memory is this process's); cancels passed on are recorded."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def pass_on_cancels(self, cancelled) -> None:
        self.calls.append("cancels")


def maintained_worker(calls: list[str], *, renewal_due=False, lean=False) -> Worker:
    worker = Worker(queues=["default"])
    worker._wakeups = SimpleNamespace(live=lean)
    worker.pool = ChildlessPool(calls)
    worker.held = RecordingHeld(renewal_due=renewal_due)
    worker.db = SimpleNamespace(
        heartbeat=lambda **_: calls.append("beat") and False,
        renew_leases=lambda held: calls.append("renew") or set(),
        recover_lost_tasks=lambda: calls.append("recover"),
        prune_dead_workers=lambda: calls.append("prune"),
        roll_up_hours=lambda: calls.append("roll up"),
        due_upkeep=lambda: calls.append("upkeep"),
    )
    return worker


def test_a_busy_worker_renews_only_when_due_and_beats_only_at_its_heartbeat(default_queue, monkeypatch):
    calls: list[str] = []
    worker = maintained_worker(calls)
    worker._next_heartbeat = time.monotonic() + 60
    worker._maintain()
    assert calls == []  # nothing due
    worker.held._renewal_due = True
    worker._maintain()
    assert calls == ["renew", "cancels"]
    calls.clear()
    worker.held._renewal_due = False
    worker._next_heartbeat = time.monotonic() - 0.5
    worker._maintain()
    assert calls == ["beat", "recover", "prune", "roll up"]
    worker._maintain()
    assert calls == ["beat", "recover", "prune", "roll up"], "the next beat is a heartbeat interval away"
    clock = [5000.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])
    worker._next_heartbeat = 5000.0  # its very instant
    calls.clear()
    for clock[0] in (5000.0, 5000.0 + worker.heartbeat_seconds - 0.5, 5000.0 + worker.heartbeat_seconds):
        worker._maintain()
    assert calls == ["beat", "recover", "prune", "roll up"] * 2  # at the instant, then one interval later


def test_an_idle_worker_with_wake_ups_beats_on_its_own_only_once_its_turn_is_past(default_queue, monkeypatch):
    calls: list[str] = []
    worker = maintained_worker(calls, lean=True)
    worker.held = RecordingHeld()  # holds nothing
    worker._next_heartbeat = time.monotonic() - worker.idle_heartbeat_seconds + 30  # its own beat 30 s away
    worker._maintain()
    assert calls == ["upkeep"]
    calls.clear()
    worker._next_heartbeat = time.monotonic() - worker.idle_heartbeat_seconds - 0.5  # half a second past
    worker._maintain()
    assert calls == ["beat", "upkeep"]
    calls.clear()
    monkeypatch.setattr(loop.time, "monotonic", lambda: 5000.0)
    worker._next_heartbeat = 5000.0 - worker.idle_heartbeat_seconds  # its very instant
    worker._maintain()
    assert calls == ["beat", "upkeep"]


def claiming_worker(*claims: Claim, active: int = 0) -> Worker:
    worker = Worker(queues=["default"], concurrency=2, prefetch=1, batch_size=2)
    worker.pool = fake_pool(idle_child=True)
    worker.held = FakeHeld(active=active)
    answers = iter(claims)
    worker.db = SimpleNamespace(record_and_claim=lambda held, flush, claim_limit: next(answers))
    return worker


def test_a_claim_s_answer_says_when_to_claim_again_and_whether_anything_is_left_to_run(default_queue):
    worker = claiming_worker(Claim(), Claim(), Claim(tasks=[object()]))
    before = time.monotonic()
    worker._record_and_claim()
    assert (worker._idle_claims, worker._nothing_runnable) == (1, True)
    # backing off: the first idle claim waits 50 to 100 ms
    assert before + IDLE_BACKOFF_START / 2 <= worker._next_claim <= time.monotonic() + 2 * IDLE_BACKOFF_START
    worker._next_claim = 0.0
    worker._record_and_claim()
    assert worker._idle_claims == 2
    worker._next_claim = 0.0
    worker._record_and_claim()
    assert (worker._idle_claims, worker._nothing_runnable) == (0, False)  # tasks: more may be left

    busy = claiming_worker(Claim(), active=1)  # one task running: it may make more
    busy._record_and_claim()
    assert busy._nothing_runnable is False
    for unsure in (Claim(held_back=True), Claim(contended=True), Claim(partial=True)):
        other = claiming_worker(unsure)  # tasks may be left that this claim could not take
        other._record_and_claim()
        assert other._nothing_runnable is False, unsure


@pytest.mark.parametrize("now", [100.0, 100.5])  # the grace's very end, and after it
def test_a_stopping_worker_whose_grace_is_over_says_which_running_tasks_it_hands_back(
    default_queue, caplog, monkeypatch, now
):
    worker = Worker(queues=["default"])
    worker.held = RecordingHeld(active=1)
    worker.pool = FakeStoppingPool(SimpleNamespace(unfinished=lambda: [9]))
    worker._stopping, worker._grace_deadline = True, 100.0
    monkeypatch.setattr(loop.time, "monotonic", lambda: now)
    caplog.set_level("WARNING", logger="taskhub.worker")
    assert worker._done() is True
    assert caplog.messages == ["grace period over: handing back task 9"]
    assert worker.held.calls == [("release_later", [9])]


class FakeStoppingPool:
    def __init__(self, child) -> None:
        self.children = [child]

    def running(self):
        return iter([(child, 9, 0.0) for child in self.children])

    def __iter__(self):
        return iter(list(self.children))

    def kill(self, child) -> list:
        self.children.remove(child)
        return []

    def __len__(self) -> int:
        return len(self.children)


@pytest.mark.parametrize(("run_at", "expected"), [(None, ["look"]), (-1, ["look", "claim"])])
def test_an_idle_poll_looks_and_claims_only_when_the_look_found_a_task_due(default_queue, run_at, expected):
    calls: list[str] = []
    due = None if run_at is None else timezone.now() + timedelta(seconds=run_at)
    worker = idle_worker_with_wake_ups(calls, run_at=due)
    worker.pool, worker.held = fake_pool(busy=False, idle_child=True), FakeHeld()
    worker.db.record_and_claim = lambda held, flush, claim_limit: calls.append("claim") or Claim()
    worker._next_heartbeat = time.monotonic() + 60
    worker._idle_claims = 1  # the last claim found nothing
    worker._record_and_claim()
    assert calls == expected


def test_outcomes_waiting_are_recorded_without_a_look_first(default_queue):
    calls: list[str] = []
    worker = idle_worker_with_wake_ups(calls)
    worker.pool, worker.held = fake_pool(busy=False, idle_child=True), FakeHeld(waiting=1)
    worker.db.record_and_claim = lambda held, flush, claim_limit: calls.append(f"record {flush}") or Claim()
    worker._next_heartbeat = time.monotonic() + 60
    worker._idle_claims = 1
    worker._record_and_claim()
    assert calls == ["record True"]


def test_after_a_claim_a_woken_worker_or_one_that_ran_tasks_goes_back_to_looking(default_queue):
    calls: list[str] = []
    worker = idle_worker_with_wake_ups(calls)
    worker.pool, worker.held = fake_pool(busy=False, idle_child=True), FakeHeld()
    answers = iter([Claim(tasks=[object()]), Claim(), Claim()])
    worker.db.record_and_claim = lambda held, flush, claim_limit: calls.append("claim") or next(answers)
    wake(worker)  # a queue of its was woken: it claims at once
    worker._record_and_claim()  # and found tasks (they ran since)
    worker._next_claim = 0.0
    worker._record_and_claim()  # then nothing
    assert worker._may_peek(), "idle again: its next poll is a look"
    wake(worker)
    worker._record_and_claim()
    assert calls == ["claim", "claim", "claim"]
    assert worker._may_peek()


def test_every_child_past_its_deadline_is_stopped_not_only_the_first_one_checked(default_queue, monkeypatch):
    worker = Worker(queues=["default"])
    killed = []

    def child(task_id: int) -> SimpleNamespace:
        return SimpleNamespace(
            receive=lambda: [], is_running=lambda pk: pk == task_id, unfinished=lambda: [task_id], pid=task_id
        )

    on_time, late = child(1), child(2)
    just_done = SimpleNamespace(receive=lambda: [], is_running=lambda pk: False, pid=3)  # finished in the instant
    worker.held = RecordingHeld()
    monkeypatch.setattr(worker.held, "deadline_of", lambda task_id, started: {1: 1e12, 2: 0.0, 3: 0.0}[task_id])
    worker.pool = SimpleNamespace(
        running=lambda: iter([(on_time, 1, 0.0), (just_done, 3, 0.0), (late, 2, 0.0)]),
        kill=lambda c: killed.append(c.pid) or [],
        fill=lambda: None,
    )
    worker._enforce_deadlines()
    assert killed == [2]
    assert [o.task_id for o in worker.held.outcomes()] == [2]


def test_a_stopping_worker_whose_children_are_gone_still_records_what_it_holds_within_its_grace(
    default_queue, monkeypatch
):
    worker = Worker(queues=["default"])
    worker.pool = FakeStoppingPool(None)
    worker.pool.children = []
    worker._stopping, worker._grace_deadline = True, 100.0
    monkeypatch.setattr(loop.time, "monotonic", lambda: 99.0)
    worker.held = RecordingHeld(active=1)  # outcomes still to record
    assert worker._done() is False
    worker.held = RecordingHeld(active=0)
    assert worker._done() is True


def test_an_idle_worker_stops_once_drained_or_past_its_max_tasks(default_queue):
    worker = Worker(queues=["default"], max_tasks=3)
    stops: list[str] = []
    worker.shutdown = stops.append
    worker._draining = True
    worker.held = FakeHeld(active=1, processed=5)
    worker._done()
    assert stops == []  # still holding a task
    worker.held = FakeHeld(active=0, processed=0)
    worker._done()
    assert stops == ["drained"]
    worker._draining = False
    worker.held = FakeHeld(active=0, processed=5)  # past its max: a batch ran more than it needed
    worker._done()
    assert stops == ["drained", "--max-tasks 3 reached"]


def test_floors_keep_mistyped_settings_from_turning_the_worker_into_a_busy_loop(default_queue, settings):
    settings.TASKHUB_POLL_INTERVAL_SECONDS = 0.0001
    settings.TASKHUB_CLAIM_BATCH_SIZE = 0
    settings.TASKHUB_WORKER_HEARTBEAT_SECONDS = 0.001
    settings.TASKHUB_SHUTDOWN_GRACE_SECONDS = -5
    worker = Worker(queues=["default"])
    assert (worker.poll_interval, worker.batch_size, worker.heartbeat_seconds, worker.grace_seconds) == (
        0.01,
        1,
        0.1,
        0.0,
    )
    settings.TASKHUB_WORKER_HEARTBEAT_SECONDS = 0.5  # above the floor: kept as set
    settings.TASKHUB_SHUTDOWN_GRACE_SECONDS = 0
    worker = Worker(queues=["default"])
    assert (worker.heartbeat_seconds, worker.grace_seconds) == (0.5, 0.0)


def test_a_burst_worker_whose_first_claim_could_not_be_made_does_not_stop_for_want_of_work(default_queue):
    worker = Worker(queues=["default"], burst=True)
    worker.pool = fake_pool(idle_child=True)
    worker.held = FakeHeld(active=0)
    worker.db = SimpleNamespace(record_and_claim=lambda held, flush, claim_limit: None)  # the database is away
    worker._record_and_claim()
    worker._done()
    assert worker._stop_reason is None, "nothing is known to be left to run: it claims again"
    worker.db = SimpleNamespace(record_and_claim=lambda held, flush, claim_limit: Claim())
    worker._record_and_claim()
    worker._done()
    assert worker._stop_reason is not None  # now it knows: a burst worker with nothing to run stops


def test_a_closing_worker_records_the_outcomes_it_has_collected(alice, default_queue):
    task = enqueue_many(alice, payload={"text": "kept"})[0]
    worker = Worker(queues=["default"])
    worker.start()
    try:
        run_until(worker, lambda: worker.pool.busy() or worker.held.outcomes_waiting())
        worker._record_and_claim = lambda: None  # nothing recorded in the rounds: only close() can
        run_until(worker, lambda: worker.held.outcomes_waiting() == 1)
        assert TaskQueue.objects.get(pk=task.pk).status == TaskStatus.RUNNING
    finally:
        worker.close()
    stored = TaskQueue.objects.get(pk=task.pk)
    assert (stored.status, stored.result) == (TaskStatus.SUCCEEDED, {"text": "kept"})


def test_a_run_at_due_at_the_claims_very_instant_is_another_worker_s_and_one_ahead_is_waited_for(
    default_queue, monkeypatch
):
    now = timezone.now()
    monkeypatch.setattr(loop.timezone, "now", lambda: now)
    worker = Worker(queues=["default"])
    before = time.monotonic()
    # Due at the very instant the claim looked, yet not claimed: another worker is claiming it.
    worker._idle_wait(Claim(next_run_at=now, as_of=now))
    assert before + IDLE_BACKOFF_START <= worker._next_run_at <= time.monotonic() + IDLE_BACKOFF_START
    # Half a second ahead, by a claim that read no clock of its own: waited for, to its instant.
    worker._idle_wait(Claim(next_run_at=now + timedelta(seconds=0.5), as_of=None))
    assert before + 0.5 <= worker._next_run_at <= time.monotonic() + 0.5


def test_an_idle_poll_waits_up_to_a_tenth_more_than_the_poll_interval(default_queue, monkeypatch):
    monkeypatch.setattr(loop, "random", SimpleNamespace(uniform=lambda low, high: high))
    worker = idle_worker_with_wake_ups([])
    worker._next_heartbeat = time.monotonic() + 60
    before = time.monotonic()
    worker._peek()
    assert before + 2.2 <= worker._next_claim <= time.monotonic() + 2.2


def test_an_idle_poll_gives_its_turn_to_the_heartbeat_at_its_very_instant(default_queue, monkeypatch):
    calls: list[str] = []
    worker = idle_worker_with_wake_ups(calls)
    monkeypatch.setattr(loop.time, "monotonic", lambda: 5000.0)
    worker._next_heartbeat = 5000.0
    worker._peek()
    assert calls == ["beat"]


def test_an_idle_poll_that_finds_the_database_away_claims_nothing(default_queue):
    worker = idle_worker_with_wake_ups([])
    worker.db.look = lambda: None  # the database is away: its back-off applies
    worker._next_heartbeat = time.monotonic() + 60
    worker._idle_claims = 1
    assert worker._peek() is False
    claims = []
    worker.db.record_and_claim = lambda held, flush, claim_limit: claims.append(claim_limit)
    worker.pool = fake_pool(idle_child=True)
    worker._next_claim = 0.0
    worker._record_and_claim()
    assert claims == []


def test_a_woken_worker_backs_off_afresh_from_50_ms_when_its_claim_finds_nothing(default_queue, monkeypatch):
    monkeypatch.setattr(loop, "random", SimpleNamespace(uniform=lambda low, high: high))
    woken = []
    worker = claiming_worker(Claim())
    worker._wakeups = SimpleNamespace(take=lambda: {"default"}, live=False)  # the wake came; then Redis went away
    worker.db.woken = woken.append
    worker._idle_claims = 6  # long backed off
    worker._take_wakeups()
    assert woken == [{"default"}]
    before = time.monotonic()
    worker._record_and_claim()
    # The first step of the back-off after the wake-up's claim: 2 × 50 ms at most.
    assert before + 2 * IDLE_BACKOFF_START <= worker._next_claim <= time.monotonic() + 2 * IDLE_BACKOFF_START


class DeadlineHeld(FakeHeld):
    """A book with nothing else due, whose running tasks end at the given deadlines (None: no timeout)."""

    def __init__(self, deadlines: dict[int, float | None], **counts) -> None:
        super().__init__(**counts)
        self.deadlines = deadlines

    def next_due(self, now: float, *, flush_delay: float) -> float:
        return math.inf

    def deadline_of(self, task_id: int, started: float) -> float | None:
        return self.deadlines[task_id]


def test_a_round_waits_no_longer_than_the_next_heartbeat_claim_or_task_deadline(default_queue):
    worker = Worker(queues=["default"], concurrency=2, prefetch=1)
    now = time.monotonic()
    worker._next_heartbeat = worker._next_claim = worker.db._next_tick = now + 60  # nothing due
    assert worker._wait_timeout() == MAX_WAIT

    worker._next_heartbeat = now + 0.1  # busy (no wake-ups): its heartbeat
    assert 0 < worker._wait_timeout() <= 0.1
    worker._wakeups = SimpleNamespace(live=True)  # idle with wake-ups: its own beat comes a beat later
    assert worker._wait_timeout() == MAX_WAIT
    worker._wakeups = None

    worker._next_heartbeat, worker._next_claim = now + 60, now + 0.2  # room for tasks: the next claim
    assert 0.1 < worker._wait_timeout() <= 0.2
    worker._draining = True  # claiming nothing more: no claim to wait for
    assert worker._wait_timeout() == MAX_WAIT
    worker._draining = False
    worker.held = DeadlineHeld({}, active=2)  # both children supplied: no room, no claim
    worker.pool = fake_pool()
    assert worker._wait_timeout() == MAX_WAIT

    worker._next_claim = now + 60
    worker.db._recover_at = now + 0.1  # a lost lease due: an idle worker with wake-ups takes it back then
    worker.held = DeadlineHeld({})
    assert worker._wait_timeout() == MAX_WAIT  # busy: taken back at its heartbeat
    worker._wakeups = SimpleNamespace(live=True)
    assert 0 < worker._wait_timeout() <= 0.1
    worker._wakeups, worker.db._recover_at = None, math.inf

    worker.pool = fake_pool(running=2)  # tasks 0 and 1: one without a timeout, one ending soon
    worker.held = DeadlineHeld({0: None, 1: time.monotonic() + 0.15}, active=2)
    assert 0.1 < worker._wait_timeout() <= 0.15


def test_an_idle_look_claims_a_task_due_at_its_very_instant_or_a_moment_ago(default_queue, monkeypatch):
    now = timezone.now()
    monkeypatch.setattr(loop.timezone, "now", lambda: now)
    for run_at in (now, now - timedelta(seconds=0.5)):
        worker = idle_worker_with_wake_ups([], run_at=run_at)
        worker._next_heartbeat = time.monotonic() + 60
        assert worker._peek() is True, run_at


def test_a_round_whose_moment_is_already_past_does_not_wait(default_queue):
    worker = Worker(queues=["default"], concurrency=2, prefetch=1)
    worker._next_heartbeat = worker.db._next_tick = time.monotonic() + 60
    worker._next_claim = time.monotonic() - 1  # overdue
    assert worker._wait_timeout() == 0


def test_closing_a_worker_kills_its_children_and_start_leaves_signal_handlers_alone(default_queue):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    worker = Worker(queues=["default"], concurrency=2)
    worker.start()
    children = list(worker.pool)
    try:
        assert len(children) == 2 and all(child.process.is_alive() for child in children)
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    finally:
        worker.close()
    assert not any(child.process.is_alive() for child in children)


def test_run_stops_on_sigterm_while_it_runs_and_restores_the_handlers_after(default_queue, monkeypatch):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    worker = Worker(queues=["default"])
    seen = []

    def one_round(timeout=None) -> bool:
        handler = signal.getsignal(signal.SIGTERM)
        seen.append(handler is not before[0] and signal.getsignal(signal.SIGINT) is not before[1])
        handler(signal.SIGTERM, None)  # what the signal would do
        return False

    monkeypatch.setattr(worker, "run_one", one_round)
    worker.run()
    assert seen == [True]
    assert worker._stop_reason == "SIGTERM"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_the_start_line_says_whether_the_worker_is_a_burst_one(default_queue, caplog):
    caplog.set_level("INFO", logger="taskhub.worker")
    for burst in (True, False):
        worker = Worker(queues=["default"], burst=burst)
        caplog.clear()
        worker.start()
        worker.close()
        started = [message for message in caplog.messages if " started: " in message]
        assert len(started) == 1
        assert (" burst " in started[0]) is burst, started[0]
        assert "queues=default " in started[0]
    worker = Worker()
    caplog.clear()
    worker.start()
    worker.close()
    assert [message for message in caplog.messages if " started: queues=all " in message]
    assert Worker(queues=["default"]).concurrency == 1  # one child unless asked for more


def test_room_never_exceeds_what_is_left_of_max_tasks(default_queue):
    worker = Worker(queues=["default"], concurrency=8, prefetch=1, batch_size=10, max_tasks=10)
    worker.pool = fake_pool(idle_child=True)
    worker.held = FakeHeld(active=1, processed=4)  # 10 - 4 run - 1 held: 5 left
    assert worker._room() == 5


def test_outcomes_are_flushed_once_they_have_waited_the_flush_delay_to_the_instant(default_queue, monkeypatch):
    worker = Worker(queues=["default"], batch_size=5)
    worker.pool = fake_pool(busy=True)
    monkeypatch.setattr(loop.time, "monotonic", lambda: loop.FLUSH_DELAY)
    worker.held = FakeHeld(waiting=1, waiting_since=0.0)
    assert worker._flush_due() is True


def test_a_worker_with_room_for_one_task_waits_for_its_next_claim(default_queue):
    worker = Worker(queues=["default"], concurrency=1, prefetch=1)
    now = time.monotonic()
    worker._next_heartbeat = worker.db._next_tick = now + 60
    worker._next_claim = now + 0.2
    assert worker._room() == 1
    assert 0.1 < worker._wait_timeout() <= 0.2


def test_room_is_claimed_from_half_of_an_odd_number_of_places_rounded_down(default_queue):
    worker = Worker(queues=["default"], concurrency=5, prefetch=1, batch_size=10)  # 5 places: from 2 free
    worker.pool = fake_pool(idle_child=False)
    worker.held = FakeHeld(active=3, ready=1)
    assert worker._room() == 2


def test_a_round_waits_on_the_children_and_the_wake_ups_for_its_own_wait_or_the_one_given(default_queue):
    worker = Worker(queues=["default"])
    worker._next_heartbeat = worker._next_claim = worker.db._next_tick = time.monotonic() + 60  # nothing due
    waits = []
    worker._signals.wait = lambda sources, timeout: waits.append((list(sources), timeout))
    worker.pool = SimpleNamespace(pipes=lambda: ["pipe"], running=lambda: iter([]), has_idle_child=lambda: False)
    worker._collect = worker._enforce_deadlines = worker._record_and_claim = worker._maintain = lambda: None
    worker.db = SimpleNamespace(
        hand_back=lambda held: None,
        flush_progress=lambda held: None,
        fire_schedules=lambda: None,
        next_tick_at=lambda: math.inf,
        available_at=lambda: 0.0,
    )
    worker.pool.dispatch = worker.pool.publish_deadlines = lambda *args: None
    worker.run_one()
    worker.run_one(0.05)
    listener = SimpleNamespace(take=lambda: set(), live=False)
    worker._wakeups = listener
    worker.run_one()
    assert waits == [(["pipe"], MAX_WAIT), (["pipe"], 0.05), (["pipe", listener], MAX_WAIT)]


def test_a_worker_claims_at_the_very_instant_its_back_off_ends(default_queue, monkeypatch):
    worker = Worker(queues=["default"], concurrency=2, prefetch=1, batch_size=2)
    worker.pool = fake_pool()
    worker.held = FakeHeld(active=0)
    monkeypatch.setattr(loop.time, "monotonic", lambda: 5000.0)
    worker._next_claim = 5000.0
    assert worker._claim_limit() == 2


def test_an_idle_worker_s_own_beat_is_a_third_of_the_stale_limit_not_rounded(default_queue, settings):
    settings.TASKHUB_WORKER_HEARTBEAT_SECONDS = 1
    settings.TASKHUB_WORKER_STALE_SECONDS = 10
    assert Worker(queues=["default"]).idle_heartbeat_seconds == pytest.approx(10 / 3)


def test_an_idle_worker_s_next_own_beat_is_an_idle_beat_after_its_last(default_queue, monkeypatch):
    calls: list[str] = []
    worker = idle_worker_with_wake_ups(calls)
    clock = [5000.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])
    worker._next_heartbeat = 5000.0
    worker._peek()  # the heartbeat's turn
    assert worker._next_heartbeat == 5000.0 + worker.idle_heartbeat_seconds
    for clock[0] in (5001.0, 5000.0 + worker.idle_heartbeat_seconds - 0.5, 5000.0 + worker.idle_heartbeat_seconds):
        worker._peek()
    assert calls == ["beat", "look", "look", "beat"]


def test_a_heartbeat_answered_with_a_drain_request_stops_claims_once_and_says_so_once(default_queue, caplog):
    answers = iter([False, True, True])
    worker = Worker(queues=["default"])
    worker.pool = []
    worker.db = SimpleNamespace(heartbeat=lambda **_: next(answers))
    caplog.set_level("INFO", logger="taskhub.worker")
    worker._heartbeat()
    assert not worker._draining
    worker._heartbeat()
    worker._heartbeat()
    assert worker._draining
    assert [message for message in caplog.messages if "drain requested" in message] == [
        f"worker {worker.worker_id}: drain requested: claiming nothing more, finishing the 0 tasks it holds, then exiting"
    ]
