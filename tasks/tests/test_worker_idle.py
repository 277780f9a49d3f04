"""An idle worker's cost with wake-ups live: one statement per poll interval, promises kept.

The worker runs in this process, one round at a time, on the test database and a real Redis
(`redis_server` from test_wakeups); every statement it sends is counted by a cursor wrapper
and, on MariaDB, by the server itself (`Questions` of the session, which also counts
transaction statements such as COMMIT and SET autocommit).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tasks import schedule_services, transitions, wakeups
from tasks.models import QueueConfig, Schedule, ScheduleFire, TaskQueue, TaskStatus, WorkerProcess
from tasks.tests.conftest import enqueue_many, wait_for
from tasks.tests.test_wakeups import messages, redis_server, subscribe_all, wakeup_url, wakeup_worker  # noqa: F401 - fixtures
from tasks.worker import Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

WINDOW_SECONDS = 8.0


class Statements:
    """A cursor wrapper counting every statement sent through Django."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        self.sql.append(sql)
        return execute(sql, params, many, context)


def server_questions() -> int | None:
    """Return the statements this session has sent, as MariaDB counts them (None on SQLite)."""
    if connection.vendor != "mysql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Questions'")
        return int(cursor.fetchone()[1])


def run_rounds(worker: Worker, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        worker.run_one()


@pytest.fixture
def idle_worker(settings, default_queue, redis_server, wakeup_url):  # noqa: F811 - fixtures
    """A started worker with wake-ups live, idle (it has claimed once and found nothing)."""
    settings.TASKHUB_POLL_INTERVAL_SECONDS = 1.0
    settings.TASKHUB_WORKER_HEARTBEAT_SECONDS = 1.0
    settings.TASKHUB_WORKER_STALE_SECONDS = 6.0  # an idle heartbeat every 2 s: several in a window
    worker = Worker(queues=["default"])
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not (worker._wakeups.live and worker._idle_claims > 0):
            assert time.monotonic() < deadline, "the worker did not subscribe and go idle"
            worker.run_one()
        run_rounds(worker, 1.5)  # its start-up claims and first look are behind it
        yield worker
    finally:
        worker.shutdown()
        while worker.run_one(0.05):
            pass
        worker.close()


def test_an_idle_worker_with_wake_ups_sends_at_most_one_statement_per_second(alice, default_queue, idle_worker):
    # Work it must keep an eye on: a schedule, a scheduled task, another worker's running task.
    Schedule.objects.create(
        owner=alice,
        queue=default_queue,
        name="hourly",
        task_type="echo",
        interval_seconds=3600,
        created_at=timezone.now(),
        next_fire_at=timezone.now() + timedelta(hours=1),
    )
    enqueue_many(alice, run_at=timezone.now() + timedelta(hours=1))
    other = QueueConfig.objects.create(name="other", task_timeout_seconds=3600)
    enqueue_many(alice, queue=other)
    transitions.claim(worker_id="busy-elsewhere", queues=[other], limit=1)
    run_rounds(idle_worker, 2.5)  # the wake-ups of these enqueues made it claim: idle again after
    beat_before = WorkerProcess.objects.get(worker_id=idle_worker.worker_id).last_heartbeat_at

    statements = Statements()
    before = server_questions()
    with connection.execute_wrapper(statements):
        run_rounds(idle_worker, WINDOW_SECONDS)
    after = server_questions()

    assert len(statements.sql) <= WINDOW_SECONDS, "\n".join(sql[:90] for sql in statements.sql)
    if before is not None:
        # The server counts what Django's wrapper does not see (transactions), and the first SHOW.
        assert after - before - 1 <= WINDOW_SECONDS, (after - before - 1, statements.sql)
    beat_after = WorkerProcess.objects.get(worker_id=idle_worker.worker_id).last_heartbeat_at
    assert (beat_after - beat_before).total_seconds() >= 2, "the worker's row is kept fresh all the same"


def test_an_idle_worker_takes_back_a_lost_lease_within_a_poll_of_its_end(alice, idle_worker):
    queue = QueueConfig.objects.create(name="short", task_timeout_seconds=2)
    task = enqueue_many(alice, queue=queue)[0]
    transitions.claim(worker_id="died-a-moment-ago", queues=[queue], limit=1)
    lease_end = TaskQueue.objects.get(pk=task.pk).lease_expires_at

    deadline = time.monotonic() + 30
    while TaskQueue.objects.get(pk=task.pk).status == TaskStatus.RUNNING:
        assert time.monotonic() < deadline, "the lost lease was never taken back"
        idle_worker.run_one()
    taken_back = timezone.now()

    assert TaskQueue.objects.get(pk=task.pk).status == TaskStatus.PENDING
    # Within a poll (1 to 1.1 s) of the lease's end, not a heartbeat or more later.
    assert (taken_back - lease_end).total_seconds() < 1.6


def test_idle_workers_fire_a_schedule_created_after_they_went_idle_on_time_and_once(
    alice,
    default_queue,
    redis_server,  # noqa: F811 - fixture
    wakeup_url,  # noqa: F811 - fixture
    start_worker,
):
    workers = [wakeup_worker(start_worker, redis_server.url, poll="1") for _ in range(2)]
    time.sleep(3)  # both idle: they tick schedules only when a fire time they read is due
    schedule = schedule_services.schedule_create(
        user=alice, data={"name": "every-2s", "task_type": "echo", "interval_seconds": 2}
    )

    wait_for(lambda: ScheduleFire.objects.filter(schedule=schedule).count() >= 4, timeout=30, what="four fire times")
    fires = list(ScheduleFire.objects.filter(schedule=schedule).select_related("task").order_by("fire_time"))
    times = [fire.fire_time for fire in fires]
    assert len(set(times)) == len(times), "each fire time once"
    assert [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)] == [2.0] * (len(times) - 1)
    lateness = [(fire.task.created_at - fire.fire_time).total_seconds() for fire in fires]
    assert max(lateness) < 0.5, lateness
    for worker in workers:
        assert "Traceback" not in worker.output(), worker.output()[-2000:]


def test_a_schedule_created_or_resumed_wakes_every_worker_and_a_paused_one_does_not(
    alice,
    default_queue,
    redis_server,  # noqa: F811 - fixture
    wakeup_url,  # noqa: F811 - fixture
):
    pubsub = subscribe_all(redis_server)
    any_queue = wakeups.channel(wakeups.ANY_QUEUE)

    schedule = schedule_services.schedule_create(
        user=alice, data={"name": "nightly", "task_type": "echo", "cron": "0 3 * * *"}
    )
    assert messages(pubsub, seconds=0.5) == [any_queue]
    schedule_services.schedule_set_paused(schedule=schedule, paused=True)
    assert messages(pubsub, seconds=0.5) == []
    schedule_services.schedule_set_paused(schedule=schedule, paused=False)
    assert messages(pubsub, seconds=0.5) == [any_queue]


def test_an_idle_worker_starts_scheduled_tasks_on_time_even_when_its_heartbeat_takes_a_poll(alice, idle_worker):
    late = []
    for _ in range(6):
        # Due after a poll interval: the poll before it may be the heartbeat's turn.
        run_at = timezone.now() + timedelta(seconds=1.25)
        task = enqueue_many(alice, run_at=run_at)[0]
        deadline = time.monotonic() + 10
        while TaskQueue.objects.get(pk=task.pk).status != TaskStatus.SUCCEEDED:
            assert time.monotonic() < deadline, "the scheduled task did not run"
            idle_worker.run_one()
        stored = TaskQueue.objects.get(pk=task.pk)
        late.append((stored.started_at - stored.run_at).total_seconds())
        run_rounds(idle_worker, 0.7)
    assert max(late) < 0.3, late
