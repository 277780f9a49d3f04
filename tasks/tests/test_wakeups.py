"""Wake-ups over a real Redis (`tasks.wakeups`): published after commit, heard by real worker processes.

Every test starts its own `redis-server` on a free port (never the system's at 6379), so a test
may stop it. Timing is asserted loosely: workers poll every POLL_SECONDS, so "started within
FAST_SECONDS" holds only because the wake-up arrived, not because a poll happened to come.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.db import transaction
from django.utils import timezone

from core import metrics
from tasks import services, transitions, wakeups
from tasks.models import QueueConfig, TaskQueue, TaskStatus, WorkerProcess
from tasks.specs import TaskSpec
from tasks.tests.conftest import _die_with_the_tests, enqueue_many, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

# A poll this long cannot explain a start within FAST_SECONDS.
POLL_SECONDS = "8"
FAST_SECONDS = 1.5
SUBSCRIBED = "wake-ups: subscribed at"
LISTEN_WARNING = "polling for new tasks until it is back"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A `redis-server` of this test alone, on a free port, without persistence; stop and start at will."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_the_tests,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: _pings(client), timeout=20, interval=0.05, what=f"redis-server on port {self.port}")
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (scripts/ensure-test-tools installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def wakeup_url(redis_server, settings) -> str:
    """Wake-ups on in this process, over this test's Redis."""
    settings.TASKHUB_WAKEUP_URL = redis_server.url
    return redis_server.url


def subscribe_all(server: RedisServer) -> redis.client.PubSub:
    """Subscribe to every wake-up channel of the test database (all queues, and "some queue")."""
    pubsub = server.client().pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(wakeups.channel_prefix() + "*")
    assert pubsub.get_message(timeout=5) is None  # the confirmation, skipped
    return pubsub


def messages(pubsub: redis.client.PubSub, *, seconds: float) -> list[str]:
    """Return the channels of the messages heard within `seconds`."""
    heard = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=left)
        if message is not None:
            heard.append(message["channel"].decode())
    return heard


def start_delay(task: TaskQueue) -> float:
    """Seconds from a finished task's creation (or run_at, if later) to its start."""
    stored = TaskQueue.objects.get(pk=task.pk)
    assert stored.status == TaskStatus.SUCCEEDED, stored.status
    return (stored.started_at - max(stored.created_at, stored.run_at)).total_seconds()


def succeeded(task: TaskQueue) -> bool:
    return TaskQueue.objects.filter(pk=task.pk, status=TaskStatus.SUCCEEDED).exists()


def wakeup_worker(start_worker, url: str, *args: str, poll: str = POLL_SECONDS, **env: str):
    """Start a worker with wake-ups over `url`; return it once it is registered and subscribed."""
    worker = start_worker(*args, TASKHUB_WAKEUP_URL=url, TASKHUB_POLL_INTERVAL_SECONDS=poll, **env)
    wait_for(lambda: SUBSCRIBED in worker.output(), timeout=60, what="the worker to subscribe")
    return worker


# --- Publishing ------------------------------------------------------------------------------


def test_a_committed_enqueue_wakes_its_queue_and_a_rolled_back_one_sends_nothing(
    alice, alice_api, default_queue, redis_server, wakeup_url
):
    pubsub = subscribe_all(redis_server)
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            services.task_enqueue(user=alice, task_type="echo")
            services.tasks_enqueue_bulk(user=alice, specs=[TaskSpec(task_type="echo")] * 3)
            raise RuntimeError("roll back")
        assert not TaskQueue.objects.exists()
        assert messages(pubsub, seconds=1.5) == [], "a rolled-back enqueue sends no wake-up"

        services.task_enqueue(user=alice, task_type="echo")  # autocommit: published at once
        assert messages(pubsub, seconds=1.5) == [wakeups.channel("default")]

        with transaction.atomic():
            services.tasks_enqueue_bulk(user=alice, specs=[TaskSpec(task_type="echo")] * 3)
            assert messages(pubsub, seconds=0.5) == [], "nothing before the commit"
        assert messages(pubsub, seconds=1.5) == [wakeups.channel("default")], "one wake-up per queue and commit"

        assert alice_api.post("/api/tasks/", {"task_type": "echo"}, format="json").status_code == 201
        assert messages(pubsub, seconds=1.5) == [wakeups.channel("default")]
    finally:
        pubsub.close()


def test_a_retry_and_a_resumed_queue_wake_their_queue(alice, redis_server, wakeup_url):
    queue = QueueConfig.objects.create(name="wake-retry")
    task = enqueue_many(alice, queue=queue)[0]
    transitions.cancel(task)
    pubsub = subscribe_all(redis_server)
    try:
        services.task_retry(task=TaskQueue.objects.select_related("queue").get(pk=task.pk))  # as the API loads it
        assert messages(pubsub, seconds=1.5) == [wakeups.channel("wake-retry")]

        services.queue_set_paused(queue=queue, paused=True)
        assert messages(pubsub, seconds=1) == [], "pausing makes nothing runnable"
        services.queue_set_paused(queue=queue, paused=False)
        assert messages(pubsub, seconds=1.5) == [wakeups.channel("wake-retry")]
    finally:
        pubsub.close()


def test_with_redis_down_an_enqueue_succeeds_at_once_and_warns_once(
    alice, default_queue, redis_server, wakeup_url, caplog
):
    redis_server.stop()
    failed = metrics.WAKEUPS.labels(outcome="failed")._value.get()
    skipped = metrics.WAKEUPS.labels(outcome="skipped")._value.get()
    caplog.set_level(logging.WARNING, logger="taskhub.wakeups")

    started = time.monotonic()
    tasks = [services.task_enqueue(user=alice, task_type="echo").task for _ in range(5)]
    elapsed = time.monotonic() - started

    assert TaskQueue.objects.filter(pk__in=[t.pk for t in tasks], status=TaskStatus.PENDING).count() == 5
    assert elapsed < 2.5, f"five enqueues took {elapsed:.2f}s with Redis down"
    warnings = [r for r in caplog.records if r.name == "taskhub.wakeups" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "is unavailable" in warnings[0].getMessage()
    assert metrics.WAKEUPS.labels(outcome="failed")._value.get() == failed + 1
    assert metrics.WAKEUPS.labels(outcome="skipped")._value.get() == skipped + 4, "no new try during the back-off"


# --- The listener (in this process) ------------------------------------------------------------


def test_the_listener_hears_its_queues_and_survives_redis_going_away(redis_server, settings, caplog):
    caplog.set_level(logging.INFO, logger="taskhub.wakeups")
    listener = wakeups.Listener(redis_server.url, ["mine"])
    listener.start()
    try:
        wait_for(lambda: listener.live, timeout=10, what="the listener to subscribe")
        listener.take()  # the wake-up of having subscribed
        client = redis_server.client()
        client.publish(wakeups.channel("other"), b"")
        client.publish(wakeups.channel("mine"), b"")
        client.publish(wakeups.channel(None), b"")
        woken: set = set()
        wait_for(lambda: woken.update(listener.take()) or woken == {"mine", None}, timeout=5, what="the wake-ups")
        assert woken == {"mine", None}, "not the queue it does not serve"

        redis_server.stop()
        wait_for(lambda: not listener.live, timeout=10, what="the listener to notice")
        time.sleep(3)  # several reconnection attempts
        down = [r for r in caplog.records if r.levelno == logging.WARNING and "is unavailable" in r.getMessage()]
        assert len(down) == 1, "the warning is logged once per outage"

        redis_server.start()
        wait_for(lambda: listener.live, timeout=15, what="the listener to subscribe again")
        listener.take()
        redis_server.client().publish(wakeups.channel("mine"), b"")
        wait_for(lambda: "mine" in listener.take(), timeout=5, what="a wake-up after the reconnection")
    finally:
        listener.stop()


# --- Real worker processes -------------------------------------------------------------------


def test_a_task_enqueued_after_idleness_starts_before_the_poll_interval_would_allow(
    alice, default_queue, redis_server, wakeup_url, start_worker
):
    wakeup_worker(start_worker, redis_server.url)
    time.sleep(5)  # idle: the worker is in its long poll
    delays = []
    for _ in range(3):
        task = services.task_enqueue(user=alice, task_type="echo").task
        wait_for(lambda t=task: succeeded(t), timeout=30, interval=0.05, what="the task to run")
        delays.append(start_delay(task))
        time.sleep(1)
    # Each wait for a poll would be up to POLL_SECONDS: three starts within FAST_SECONDS are wake-ups.
    assert max(delays) < FAST_SECONDS, delays


def test_two_workers_on_separate_connections_both_wake(alice, default_queue, redis_server, wakeup_url, start_worker):
    workers = [wakeup_worker(start_worker, redis_server.url) for _ in range(2)]
    wait_for(lambda: WorkerProcess.objects.count() == 2, what="both workers to register")
    time.sleep(2)
    tasks = [services.task_enqueue(user=alice, task_type="sleep", payload={"seconds": 2}).task for _ in range(2)]

    wait_for(lambda: all(succeeded(t) for t in tasks), timeout=60, what="both tasks to finish")
    stored = [TaskQueue.objects.get(pk=t.pk) for t in tasks]
    assert len({t.claimed_by for t in stored}) == 2, "each worker took one"
    assert max(start_delay(t) for t in stored) < FAST_SECONDS, "both started at once: both were woken"
    assert all(worker.output().count(SUBSCRIBED) == 1 for worker in workers)


def test_redis_stopped_mid_run_workers_keep_draining_by_polling_and_reconnect(
    alice, default_queue, redis_server, wakeup_url, start_worker
):
    workers = [wakeup_worker(start_worker, redis_server.url, "--concurrency", "2") for _ in range(2)]
    first = enqueue_many(alice, 50)
    wait_for(lambda: all(succeeded(t) for t in first), timeout=60, what="the first batch")

    redis_server.stop()
    during = []
    for _ in range(5):  # tasks keep coming while Redis is away
        during += enqueue_many(alice, 10)
        time.sleep(0.5)
    wait_for(lambda: all(succeeded(t) for t in during), timeout=60, what="the tasks enqueued while Redis was away")
    for worker in workers:
        assert worker.output().count(LISTEN_WARNING) == 1, worker.output()[-2000:]

    redis_server.start()
    for worker in workers:
        wait_for(lambda w=worker: "wake-ups: subscribed again" in w.output(), timeout=30, what="re-subscription")
    # This process publishes again once its back-off after the failure is over.
    wait_for(lambda: wakeups.publisher().publish([wakeups.channel("probe")]), timeout=30, what="publishing again")
    time.sleep(2)  # the workers are back in their long poll
    after = services.task_enqueue(user=alice, task_type="echo").task
    wait_for(lambda: succeeded(after), timeout=30, interval=0.05, what="the task after the reconnection")
    assert start_delay(after) < FAST_SECONDS, "woken again, not found by a poll"

    every = [*first, *during, after]
    assert TaskQueue.objects.filter(status=TaskStatus.SUCCEEDED, attempts=1).count() == len(every), "nothing lost"
    assert all(worker.output().count(LISTEN_WARNING) == 1 for worker in workers), "one warning per outage"


def test_an_idle_worker_starts_a_scheduled_task_close_to_its_run_at(
    alice, default_queue, redis_server, wakeup_url, start_worker
):
    wakeup_worker(start_worker, redis_server.url)
    time.sleep(2)
    run_at = timezone.now() + timedelta(seconds=3)
    task = services.task_enqueue(user=alice, task_type="echo", run_at=run_at).task

    wait_for(lambda: succeeded(task), timeout=30, interval=0.05, what="the scheduled task to run")
    stored = TaskQueue.objects.get(pk=task.pk)
    lateness = (stored.started_at - stored.run_at).total_seconds()
    # A poll would come up to POLL_SECONDS after run_at; the worker slept until it instead.
    assert 0 <= lateness < FAST_SECONDS, lateness


def test_a_claim_that_finds_nothing_reads_when_the_next_scheduled_task_is_due(alice, settings):
    here, there = QueueConfig.objects.create(name="here"), QueueConfig.objects.create(name="there")
    now = timezone.now()
    enqueue_many(alice, queue=here, run_at=now + timedelta(seconds=30), priority=5)
    soon = enqueue_many(alice, queue=here, run_at=now + timedelta(seconds=10))[0]
    enqueue_many(alice, queue=there, run_at=now + timedelta(seconds=1))

    _, found = transitions.record_and_claim(worker_id="w", claim_from=[here], limit=5, now=now, look_ahead=True)
    assert (found.tasks, found.next_run_at) == ([], TaskQueue.objects.get(pk=soon.pk).run_at)

    _, none = transitions.record_and_claim(
        worker_id="w", claim_from=[QueueConfig.objects.create(name="empty")], limit=5, now=now, look_ahead=True
    )
    assert (none.tasks, none.next_run_at) == ([], None)


def _tables(plan: object) -> list[dict]:
    """Return every table access of an EXPLAIN FORMAT=JSON plan, subqueries included."""
    if isinstance(plan, dict):
        found = [plan["table"]] if isinstance(plan.get("table"), dict) else []
        return found + [table for value in plan.values() for table in _tables(value)]
    if isinstance(plan, list):
        return [table for value in plan for table in _tables(value)]
    return []


@pytest.mark.mysql
@pytest.mark.parametrize("look", ["idle_look", "next_run_at"])
def test_the_look_ahead_reads_only_indexes(alice, default_queue, look):
    """The idle look and the claim's look-ahead read indexes alone: no task row, no filesort."""
    import json

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    other = QueueConfig.objects.create(name="other")
    enqueue_many(alice, 100, queue=other, run_at=timezone.now() + timedelta(hours=1))
    enqueue_many(alice, 100, status=TaskStatus.SUCCEEDED)
    enqueue_many(alice, 100, priority=5, run_at=timezone.now() + timedelta(hours=2))
    enqueue_many(alice, 100, status=TaskStatus.RUNNING, lease_expires_at=timezone.now() + timedelta(hours=1))
    with CaptureQueriesContext(connection) as captured:
        if look == "idle_look":
            found = transitions.idle_look(["default", "other"]).run_at
        else:
            found = transitions._next_run_at([default_queue.pk, other.pk])
    assert found is not None
    (sql,) = [q["sql"] for q in captured.captured_queries if "MIN" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN FORMAT=JSON " + sql)
        plan = json.loads(cursor.fetchone()[0])
    task_tables = [table for table in _tables(plan) if table.get("table_name") == "task_queue"]
    assert task_tables, plan
    assert {table["key"] for table in task_tables} <= {"task_claim_idx", "task_lease_idx"}, plan
    assert all(table.get("using_index") is True for table in task_tables), plan
    assert "filesort" not in json.dumps(plan), plan
