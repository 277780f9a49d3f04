"""A handler never outlives its task's lease: no two runs of one task at once, whatever fails.

Real worker processes on the real database. The handler (`test.marks`) writes a mark every
20 ms, so a run's last mark shows when it stopped even when it was killed; the first attempt runs
far longer than its 4 s lease, the retry briefly.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.tests.proxy import TcpProxy
from tasks import transitions
from tasks.models import QueueConfig, TaskQueue, TaskStatus
from tasks.outcomes import Outcome, OutcomeKind
from tasks.tests.conftest import enqueue_many, wait_for
from tasks.tests.worker_handlers import runs_in_marks

LEASE = 4
LONG_FIRST_RUN = {"1": 30, "2": 0.5, "3": 0.5}


def leased_queue() -> QueueConfig:
    return QueueConfig.objects.create(
        name="leased", task_timeout_seconds=LEASE, retry_backoff_seconds=1, retry_backoff_max_seconds=1
    )


def assert_runs_never_overlap(marks: str) -> dict[tuple[int, int], tuple[float, float, bool]]:
    runs = runs_in_marks(marks)
    by_task: dict[int, list[tuple[float, float, int]]] = {}
    for (task_id, attempt), (first, last, _stopped) in runs.items():
        by_task.setdefault(task_id, []).append((first, last, attempt))
    for task_id, spans in by_task.items():
        spans.sort()
        for (_, end, attempt), (start, _, next_attempt) in zip(spans, spans[1:], strict=False):
            assert end < start, (
                f"task {task_id}: attempt {attempt} still ran {end - start:.3f}s after attempt {next_attempt} began"
            )
    return runs


def status_of(task: TaskQueue) -> str:
    return TaskQueue.objects.get(pk=task.pk).status


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_frozen_worker_s_handler_stops_itself_before_its_lease_ends(alice, start_worker, tmp_path):
    """SIGSTOP freezes the parent (a VM pause, a long stall): nothing there can kill the child."""
    marks = str(tmp_path / "marks")
    task = enqueue_many(
        alice, queue=leased_queue(), task_type="test.marks", payload={"file": marks, "seconds": LONG_FIRST_RUN}
    )[0]
    frozen = start_worker("--queue", "leased")
    wait_for(lambda: (task.pk, 1) in runs_in_marks(marks), what="the first run to start")
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        other = start_worker("--queue", "leased")
        wait_for(lambda: status_of(task) == TaskStatus.SUCCEEDED, what="the task to succeed on the other worker")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)

    runs = assert_runs_never_overlap(marks)
    assert set(runs) == {(task.pk, 1), (task.pk, 2)}
    assert not runs[(task.pk, 1)][2], "the first run was stopped, not finished"
    stored = TaskQueue.objects.get(pk=task.pk)
    assert (stored.attempts, stored.result["attempt"]) == (2, 2)
    assert stored.claimed_by.split(":")[1] == str(other.pid)
    # Thawed, the frozen worker finds its child gone and lets the task go: its late word is refused.
    message = f"task {task.pk}: its lease ran out before this worker renewed it"
    wait_for(lambda: message in frozen.output(), timeout=20, what="the thawed worker to let the task go")
    assert [entry["error"] for entry in stored.attempt_errors] == [transitions.WORKER_LOST]
    assert TaskQueue.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED
    assert frozen.popen.poll() is None, "the thawed worker carries on"
    frozen.signal(signal.SIGTERM)
    other.signal(signal.SIGTERM)
    assert (frozen.wait(30), other.wait(30)) == (0, 0)


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_worker_cut_off_from_the_database_stops_its_handler_before_its_lease_ends(alice, start_worker, tmp_path):
    """The worker reaches MariaDB through a proxy the test cuts: it cannot renew, its handler runs on."""
    marks = str(tmp_path / "marks")
    task = enqueue_many(
        alice, queue=leased_queue(), task_type="test.marks", payload={"file": marks, "seconds": LONG_FIRST_RUN}
    )[0]
    db = connection.settings_dict
    proxy = TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 3306)))
    try:
        cut_off = start_worker("--queue", "leased", MYSQL_HOST="127.0.0.1", MYSQL_PORT=str(proxy.port))
        wait_for(lambda: (task.pk, 1) in runs_in_marks(marks), what="the first run to start")
        proxy.cut()
        other = start_worker("--queue", "leased")
        wait_for(lambda: status_of(task) == TaskStatus.SUCCEEDED, what="the task to succeed on the other worker")
        proxy.resume()

        runs = assert_runs_never_overlap(marks)
        assert set(runs) == {(task.pk, 1), (task.pk, 2)}
        assert not runs[(task.pk, 1)][2], "the first run was stopped, not finished"
        output = cut_off.output()
        assert f"task {task.pk}: its lease could not be renewed; stopped it and let it go" in output
        assert "database unavailable while" in output
        stored = TaskQueue.objects.get(pk=task.pk)
        assert (stored.attempts, stored.result["attempt"]) == (2, 2)
        assert [entry["error"] for entry in stored.attempt_errors] == [transitions.WORKER_LOST]
        assert cut_off.popen.poll() is None, "the worker carries on once the database is back"
        cut_off.signal(signal.SIGTERM)
        other.signal(signal.SIGTERM)
        assert (cut_off.wait(30), other.wait(30)) == (0, 0)
    finally:
        proxy.stop()


# --- Clocks: leases are measured by the database's clock, not each host's ----------------------

SKEW = timedelta(seconds=30)


@pytest.fixture
def host_clock(monkeypatch):
    """Set this host's wall clock off by a given amount (the database's clock stays true)."""
    true_now = timezone.now

    def set_skew(skew: timedelta) -> None:
        monkeypatch.setattr(timezone, "now", lambda: true_now() + skew)

    return set_skew


@pytest.mark.django_db(transaction=True)
def test_a_host_whose_clock_runs_fast_does_not_take_a_live_lease_back(alice, host_clock):
    queue = QueueConfig.objects.create(name="leased", task_timeout_seconds=10)
    task = enqueue_many(alice, queue=queue)[0]
    (claimed,) = transitions.claim(worker_id="honest", queues=[queue], limit=1).tasks

    host_clock(SKEW)  # 30 s fast: by its own clock the 10 s lease ended 20 s ago
    assert transitions.recover_expired_leases() == []
    assert (status_of(task), TaskQueue.objects.get(pk=task.pk).claimed_by) == (TaskStatus.RUNNING, "honest")
    assert transitions.record_outcomes(
        [(claimed, Outcome(task.pk, OutcomeKind.SUCCEEDED, result=1))],
        worker_id="honest",
        queues={},
    ), "the outcome of the worker still holding the lease is applied"


@pytest.mark.django_db(transaction=True)
def test_a_host_whose_clock_runs_slow_writes_leases_that_end_on_time(alice, host_clock):
    queue = QueueConfig.objects.create(name="leased", task_timeout_seconds=10)
    claimed_task, renewed_task = enqueue_many(alice, 2, queue=queue, run_at=timezone.now() - timedelta(hours=1))

    host_clock(-SKEW)  # 30 s slow: leases by its clock would have ended 20 s ago
    claimed = transitions.claim(worker_id="slow", queues=[queue], limit=2).tasks
    renewed = [task for task in claimed if task.pk == renewed_task.pk]
    assert transitions.renew_leases(worker_id="slow", tasks=renewed, lease_seconds={queue.pk: 10}).held == {
        renewed_task.pk
    }
    host_clock(timedelta(0))

    assert transitions.recover_expired_leases() == [], "no lease taken back before it ends"
    for task in (claimed_task, renewed_task):
        lease_left = TaskQueue.objects.get(pk=task.pk).lease_expires_at - timezone.now()
        assert timedelta(seconds=5) < lease_left <= timedelta(seconds=10)
