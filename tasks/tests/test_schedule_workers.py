"""Real `run_worker` processes firing schedules: every fire time once across workers, run_once after downtime."""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import schedule_services
from tasks.models import Schedule, ScheduleFire, TaskQueue, WorkerProcess
from tasks.tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def make_schedule(owner, queue, **fields) -> Schedule:
    created = fields.pop("created_at", timezone.now())
    schedule = Schedule.objects.create(owner=owner, queue=queue, task_type="echo", created_at=created, **fields)
    schedule.next_fire_at = schedule_services.schedule_next_fire_at(schedule, created)
    schedule.save(update_fields=["next_fire_at"])
    return schedule


def run_times(schedule: Schedule) -> list:
    return sorted(TaskQueue.objects.filter(schedule=schedule).values_list("run_at", flat=True))


def test_three_workers_fire_each_time_of_a_2s_schedule_exactly_once(alice, default_queue, start_worker):
    workers = [start_worker() for _ in range(3)]
    wait_for(lambda: WorkerProcess.objects.count() == 3, what="three workers to register")
    schedule = make_schedule(alice, default_queue, name="every-2s", interval_seconds=2)
    anchor = schedule.created_at.replace(microsecond=0)

    time.sleep(20)
    Schedule.objects.filter(pk=schedule.pk).update(is_paused=True, next_fire_at=None)
    stopped = timezone.now()
    time.sleep(1.5)  # a tick under way when it was paused may still fire one time before `stopped`
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [worker.wait(60) for worker in workers] == [0, 0, 0]

    times = run_times(schedule)
    expected = int((stopped - anchor).total_seconds() // 2)
    assert abs(len(times) - expected) <= 1, (len(times), expected)
    assert times == [anchor + timedelta(seconds=2 * n) for n in range(1, len(times) + 1)], "none lost, none twice"
    assert ScheduleFire.objects.filter(schedule=schedule).count() == len(times)
    for worker in workers:
        assert "Traceback" not in worker.output() and " ERROR " not in worker.output(), worker.output()[-2000:]


def test_a_worker_back_after_five_minutes_down_fires_run_once_exactly_once(alice, default_queue, start_worker):
    created = timezone.now() - timedelta(minutes=6)
    schedule = make_schedule(alice, default_queue, name="minutely", interval_seconds=60, created_at=created)
    assert schedule.next_fire_at < timezone.now() - timedelta(minutes=4)  # missed five times while "down"

    worker = start_worker()
    wait_for(lambda: run_times(schedule), what="the missed fire time")
    time.sleep(2.5)  # more ticks: nothing more
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0

    [fired] = run_times(schedule)
    anchor = created.replace(microsecond=0)
    assert fired == anchor + timedelta(minutes=6), "the latest missed time, once"
    schedule.refresh_from_db()
    assert schedule.next_fire_at == anchor + timedelta(minutes=7)


def test_overlap_skip_fires_nothing_while_the_previous_run_is_still_going(alice, default_queue, start_worker):
    schedule = make_schedule(
        alice, default_queue, name="slow", interval_seconds=1, overlap="skip", payload={"seconds": 2.5}
    )
    Schedule.objects.filter(pk=schedule.pk).update(task_type="sleep")
    worker = start_worker("--concurrency", "2")

    wait_for(lambda: TaskQueue.objects.filter(schedule=schedule, status="succeeded").count() >= 2, timeout=60)
    Schedule.objects.filter(pk=schedule.pk).update(is_paused=True, next_fire_at=None)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0

    runs = list(TaskQueue.objects.filter(schedule=schedule).order_by("run_at"))
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.created_at >= earlier.finished_at, "a run was created while the previous one was active"
    assert ScheduleFire.objects.filter(schedule=schedule, outcome="overlap").exists()
