"""Schedules: fire times in time zones across DST, the tick's catch-up and misfire policies, overlap, one claim per fire time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from core import metrics
from tasks import schedule_services, schedules, services, transitions
from tasks.models import Schedule, ScheduleFire, ScheduleFireOutcome, TaskQueue, TaskStatus
from tasks.tests.factories import finished_fields


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def timing(cron: str = "", zone: str = "UTC", interval: int | None = None, anchor: datetime | None = None):
    return schedules.Timing(cron=cron, interval_seconds=interval, timezone=zone, anchor=anchor or utc(2026, 1, 1))


# --- Fire times ---------------------------------------------------------------------------------


def test_a_daily_cron_in_shanghai_fires_at_01_utc():
    times = schedules.next_fire_times(timing("0 9 * * *", "Asia/Shanghai"), utc(2026, 3, 7, 2), 3)
    assert times == [utc(2026, 3, 8, 1), utc(2026, 3, 9, 1), utc(2026, 3, 10, 1)]


def test_a_time_skipped_by_spring_forward_fires_once_at_the_next_valid_instant():
    # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z); 02:30 never happens that day.
    times = schedules.next_fire_times(timing("30 2 * * *", "America/New_York"), utc(2026, 3, 7), 3)
    assert times == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]


def test_the_skipped_hour_of_a_frequent_cron_fires_once():
    times = schedules.next_fire_times(timing("*/30 * * * *", "America/New_York"), utc(2026, 3, 8, 4, 59), 6)
    assert times == [
        utc(2026, 3, 8, 5, 0),
        utc(2026, 3, 8, 5, 30),
        utc(2026, 3, 8, 6, 0),
        utc(2026, 3, 8, 6, 30),
        utc(2026, 3, 8, 7, 0),  # 02:00 and 02:30 (skipped) and 03:00 EDT: one instant, one fire
        utc(2026, 3, 8, 7, 30),
    ]


def test_a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence():
    # New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00Z); 01:30 happens twice.
    times = schedules.next_fire_times(timing("30 1 * * *", "America/New_York"), utc(2026, 10, 31), 3)
    assert times == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_the_repeated_hour_of_a_frequent_cron_is_not_fired_twice():
    times = schedules.next_fire_times(timing("*/30 * * * *", "America/New_York"), utc(2026, 11, 1, 3, 59), 5)
    assert times == [
        utc(2026, 11, 1, 4, 0),
        utc(2026, 11, 1, 4, 30),
        utc(2026, 11, 1, 5, 0),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 7, 0),  # 01:00 and 01:30 EST (06:00Z, 06:30Z) were fired as EDT already
    ]


def test_a_sixth_field_is_seconds():
    times = schedules.next_fire_times(timing("* * * * * */20"), utc(2026, 1, 1, 0, 0, 1), 3)
    assert times == [utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40), utc(2026, 1, 1, 0, 1, 0)]


def test_an_interval_counts_from_the_anchor_whatever_the_zone():
    anchor = utc(2026, 3, 8, 6, 59, 0)
    times = schedules.next_fire_times(timing(interval=30, zone="America/New_York", anchor=anchor), anchor, 3)
    assert times == [anchor + timedelta(seconds=30 * n) for n in (1, 2, 3)]


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "* * * * * * *", "every day", "", "0 0 30 2 *"])
def test_bad_cron_expressions_are_named(expression):
    assert schedules.cron_problem(expression)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "UTC+8", "a" * 300, "\x00"])
def test_bad_time_zones_are_named(name):
    assert schedules.timezone_problem(name)


# --- The tick -------------------------------------------------------------------------------------

T0 = utc(2026, 5, 1, 12, 0, 0)


@pytest.fixture
def make_schedule(alice, default_queue):
    def make(**fields) -> Schedule:
        fields.setdefault("interval_seconds", 60)
        fields.setdefault("task_type", "echo")
        schedule = Schedule.objects.create(
            owner=alice, queue=default_queue, name=f"s{Schedule.objects.count()}", created_at=T0, **fields
        )
        schedule.next_fire_at = schedule_services.schedule_next_fire_at(schedule, T0)
        schedule.save(update_fields=["next_fire_at"])
        return schedule

    return make


def tasks_of(schedule: Schedule) -> list[TaskQueue]:
    return list(TaskQueue.objects.filter(schedule=schedule).order_by("run_at"))


@pytest.mark.django_db
class TestTick:
    def test_nothing_is_due_before_the_first_fire_time(self, make_schedule):
        schedule = make_schedule()
        assert schedules.schedules_fire_due(now=T0 + timedelta(seconds=59)).fired == 0
        assert not tasks_of(schedule)

    def test_a_due_fire_time_creates_one_task_owned_by_the_owner_at_that_time(self, make_schedule, alice):
        schedule = make_schedule(payload={"hello": "world"}, priority=5)
        result = schedules.schedules_fire_due(now=T0 + timedelta(seconds=60.3))
        assert result.fired == 1
        [task] = tasks_of(schedule)
        assert (task.owner, task.run_at, task.payload, task.priority) == (
            alice,
            T0 + timedelta(seconds=60),
            {"hello": "world"},
            5,
        )
        schedule.refresh_from_db()
        assert schedule.next_fire_at == T0 + timedelta(seconds=120)
        assert ScheduleFire.objects.get().task == task

    def test_a_second_tick_and_a_second_node_find_nothing_more(self, make_schedule):
        schedule = make_schedule()
        stale = Schedule.objects.get(pk=schedule.pk)  # what a slower node read before the first fired
        schedules.schedules_fire_due(now=T0 + timedelta(seconds=60.3))
        assert schedules.schedules_fire_due(now=T0 + timedelta(seconds=60.6)).fired == 0
        lost_before = metrics.SCHEDULE_FIRES_LOST._value.get()
        assert schedules.fire(stale, T0 + timedelta(seconds=60), next_fire_at=T0 + timedelta(seconds=120)) is None
        assert metrics.SCHEDULE_FIRES_LOST._value.get() == lost_before + 1
        assert len(tasks_of(schedule)) == 1

    def test_a_slow_tick_catches_up_every_due_time_within_the_grace(self, make_schedule):
        schedule = make_schedule(interval_seconds=2)
        schedules.schedules_fire_due(now=T0 + timedelta(seconds=7.5), grace=30)
        assert [t.run_at for t in tasks_of(schedule)] == [T0 + timedelta(seconds=s) for s in (2, 4, 6)]

    def test_after_downtime_run_once_fires_the_latest_missed_time_once(self, make_schedule):
        schedule = make_schedule(interval_seconds=60, misfire="run_once")
        back = T0 + timedelta(minutes=5, seconds=50)
        schedules.schedules_fire_due(now=back, grace=30)
        schedules.schedules_fire_due(now=back + timedelta(seconds=1), grace=30)
        assert [t.run_at for t in tasks_of(schedule)] == [T0 + timedelta(minutes=5)]
        schedule.refresh_from_db()
        assert schedule.next_fire_at == T0 + timedelta(minutes=6)

    def test_after_downtime_skip_fires_nothing_and_carries_on(self, make_schedule):
        schedule = make_schedule(interval_seconds=60, misfire="skip")
        schedules.schedules_fire_due(now=T0 + timedelta(minutes=5, seconds=50), grace=30)
        assert tasks_of(schedule) == []
        schedule.refresh_from_db()
        assert schedule.next_fire_at == T0 + timedelta(minutes=6)
        schedules.schedules_fire_due(now=T0 + timedelta(minutes=6, seconds=1), grace=30)
        assert [t.run_at for t in tasks_of(schedule)] == [T0 + timedelta(minutes=6)]

    def test_a_cron_schedule_never_fires_for_times_before_it_existed(self, make_schedule):
        schedule = make_schedule(interval_seconds=None, cron="0 * * * *", misfire="run_once")
        schedules.schedules_fire_due(now=T0 + timedelta(minutes=30), grace=30)
        assert tasks_of(schedule) == []
        schedules.schedules_fire_due(now=T0 + timedelta(hours=3, minutes=5), grace=30)
        assert [t.run_at for t in tasks_of(schedule)] == [T0 + timedelta(hours=3)]

    def test_overlap_skip_skips_while_the_previous_run_is_active(self, make_schedule):
        schedule = make_schedule(interval_seconds=10, overlap="skip")
        schedules.schedules_fire_due(now=T0 + timedelta(seconds=10.1))
        [first] = tasks_of(schedule)
        TaskQueue.objects.filter(pk=first.pk).update(status=TaskStatus.RUNNING)
        schedules.schedules_fire_due(now=T0 + timedelta(seconds=20.1))
        assert tasks_of(schedule) == [first]
        assert (
            ScheduleFire.objects.get(fire_time=T0 + timedelta(seconds=20)).outcome
            == ScheduleFireOutcome.SKIPPED_OVERLAP
        )
        TaskQueue.objects.filter(pk=first.pk).update(**finished_fields(TaskStatus.SUCCEEDED))
        schedules.schedules_fire_due(now=T0 + timedelta(seconds=30.1))
        assert [t.run_at for t in tasks_of(schedule)] == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=30)]

    def test_overlap_allow_fires_beside_an_active_run(self, make_schedule):
        schedule = make_schedule(interval_seconds=10)
        schedules.schedules_fire_due(now=T0 + timedelta(seconds=10.1))
        TaskQueue.objects.filter(schedule=schedule).update(status=TaskStatus.RUNNING)
        schedules.schedules_fire_due(now=T0 + timedelta(seconds=20.1))
        assert len(tasks_of(schedule)) == 2

    def test_a_paused_schedule_is_never_due(self, make_schedule):
        schedule = make_schedule(interval_seconds=10)
        schedule_services.schedule_set_paused(schedule=schedule, paused=True)
        assert Schedule.objects.get(pk=schedule.pk).next_fire_at is None
        schedules.schedules_fire_due(now=T0 + timedelta(hours=1))
        assert tasks_of(schedule) == []

    def test_a_full_quota_records_the_fire_time_as_skipped(self, make_schedule, default_queue):
        from tasks import queue_cache

        default_queue.max_active_per_user = 0
        default_queue.save()
        try:
            schedule = make_schedule(interval_seconds=10)
            schedules.schedules_fire_due(now=T0 + timedelta(seconds=10.1))
        finally:
            queue_cache.forget()
        assert tasks_of(schedule) == []
        assert ScheduleFire.objects.get().outcome == ScheduleFireOutcome.SKIPPED_QUOTA


@pytest.mark.django_db
def test_pruning_fire_rows_keeps_each_schedules_latest(make_schedule):
    from tasks.retention import schedule_fires_prune

    busy, quiet = make_schedule(interval_seconds=10), make_schedule(interval_seconds=10)
    for n in range(1, 4):
        ScheduleFire.objects.create(schedule=busy, fire_time=T0 + timedelta(seconds=10 * n), outcome="fired")
    ScheduleFire.objects.create(schedule=quiet, fire_time=T0 + timedelta(seconds=10), outcome="fired")

    assert schedule_fires_prune(before=T0 + timedelta(days=1)) == 2
    kept = sorted(ScheduleFire.objects.values_list("schedule_id", "fire_time"))
    assert kept == sorted([(busy.pk, T0 + timedelta(seconds=30)), (quiet.pk, T0 + timedelta(seconds=10))])


@pytest.mark.django_db
def test_staff_create_a_schedule_in_the_admin_with_the_same_rules(client, staff, alice, default_queue):
    client.force_login(staff)
    form = {
        "owner": alice.pk,
        "name": "admin-made",
        "cron": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "kind": "handler",
        "task_type": "echo",
        "payload": "{}",
        "queue": default_queue.pk,
        "priority": 0,
        "overlap": "allow",
        "misfire": "run_once",
        "fires-TOTAL_FORMS": "0",
        "fires-INITIAL_FORMS": "0",
    }
    bad = client.post("/admin/tasks/schedule/add/", {**form, "cron": "99 * * * *"})
    assert bad.status_code == 200 and not Schedule.objects.exists()
    good = client.post("/admin/tasks/schedule/add/", form)
    assert good.status_code == 302, good.content[:2000]
    schedule = Schedule.objects.get()
    assert schedule.next_fire_at is not None and schedule.next_fire_at.minute % 5 == 0
    assert client.get(f"/admin/tasks/schedule/{schedule.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_a_django_task_schedule_made_in_the_admin_fires_a_django_task(client, staff, alice, default_queue):
    client.force_login(staff)
    form = {
        "owner": alice.pk,
        "name": "django-add",
        "interval_seconds": 60,
        "timezone": "UTC",
        "kind": "django",
        "task_type": "tasks.tests.djtasks.add",
        "payload": '{"args": [1, 2], "kwargs": {}}',
        "queue": default_queue.pk,
        "priority": 0,
        "overlap": "allow",
        "misfire": "run_once",
        "fires-TOTAL_FORMS": "0",
        "fires-INITIAL_FORMS": "0",
    }
    bad = client.post("/admin/tasks/schedule/add/", {**form, "task_type": "tasks.tests.djtasks.right_away"})
    assert bad.status_code == 200 and not Schedule.objects.exists()
    assert client.post("/admin/tasks/schedule/add/", form).status_code == 302
    schedule = Schedule.objects.get()
    schedules.schedules_fire_due(now=schedule.next_fire_at)
    task = TaskQueue.objects.get()
    assert (task.kind, task.task_type, task.payload) == (
        "django",
        "tasks.tests.djtasks.add",
        {"args": [1, 2], "kwargs": {}},
    )


@pytest.mark.django_db
def test_a_broken_schedule_is_logged_and_left_for_a_minute_and_the_others_fire(make_schedule, caplog):
    broken, healthy = make_schedule(interval_seconds=10), make_schedule(interval_seconds=10)
    Schedule.objects.filter(pk=broken.pk).update(interval_seconds=None, cron="not a cron")  # behind the checks
    now = T0 + timedelta(seconds=10.5)
    result = schedules.schedules_fire_due(now=now)
    assert (result.fired, result.failed) == (1, 1)
    assert [t.schedule_id for t in TaskQueue.objects.all()] == [healthy.pk]
    assert Schedule.objects.get(pk=broken.pk).next_fire_at == now + timedelta(seconds=60)
    assert "could not fire" in caplog.text


@pytest.mark.mysql
@pytest.mark.django_db
def test_the_overlap_check_reads_only_the_active_schedule_index(make_schedule, alice):
    """A schedule's active runs come from task_active_schedule_idx, never from its finished history."""
    schedule = make_schedule(interval_seconds=10, overlap="skip")
    schedules.schedules_fire_due(now=T0 + timedelta(seconds=10.1))
    [task] = tasks_of(schedule)
    assert TaskQueue.objects.get(pk=task.pk).active_schedule_id == schedule.pk
    TaskQueue.objects.filter(pk=task.pk).update(**finished_fields(TaskStatus.SUCCEEDED))
    assert TaskQueue.objects.get(pk=task.pk).active_schedule_id is None

    with CaptureQueriesContext(connection) as captured:
        assert schedules._has_active_run(schedule) is False
    [query] = [q["sql"] for q in captured.captured_queries if "task_queue" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + query)
        columns = [c[0].lower() for c in cursor.description]
        plan = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    assert [row["key"] for row in plan] == ["task_active_schedule_idx"], plan


@pytest.mark.django_db
def test_an_edit_from_a_stale_copy_keeps_the_fire_times_a_worker_moved_meanwhile(make_schedule):
    schedule = make_schedule(interval_seconds=10)
    stale = Schedule.objects.select_related("queue").get(pk=schedule.pk)  # the admin form's copy
    schedules.schedules_fire_due(now=T0 + timedelta(seconds=10.1))
    schedule_services.schedule_update(schedule=stale, changes={"name": "renamed", "priority": 3})

    schedule.refresh_from_db()
    assert (schedule.name, schedule.priority) == ("renamed", 3)
    assert schedule.next_fire_at == T0 + timedelta(seconds=20), "not moved back to the time just fired"
    assert schedule.last_fired_at == T0 + timedelta(seconds=10)


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_staff_pausing_a_schedule_while_a_worker_fires_it_wait_for_each_other_without_a_deadlock(make_schedule):
    """The fire write-locks the schedule's row before its INSERTs read-lock it (the CI deadlock of a pause)."""
    schedule = make_schedule(interval_seconds=10)
    fire_time, following = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)
    task = services.task_build(user_id=schedule.owner_id, spec=schedules._spec(schedule, fire_time))
    inside, release, errors = threading.Event(), threading.Event(), []

    def hold(_task: TaskQueue) -> None:  # the quota check: inside the fire's transaction, rows written
        inside.set()
        assert release.wait(30)

    def in_thread(work) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except Exception as exc:  # reported below
                errors.append(exc)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    worker = in_thread(
        lambda: transitions.fire_schedule(
            schedule, fire_time, task=task, outcome=ScheduleFireOutcome.FIRED, next_fire_at=following, check=hold
        )
    )
    assert inside.wait(30)
    staff_copy = Schedule.objects.select_related("queue").get(pk=schedule.pk)
    staff = in_thread(lambda: schedule_services.schedule_set_paused(schedule=staff_copy, paused=True))
    waiting = "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'UPDATE `task_schedule` SET%%'"
    for _ in range(3000):  # up to 30 s on a loaded machine; found at once otherwise
        with connection.cursor() as cursor:
            cursor.execute(waiting)
            if cursor.fetchone()[0]:
                break
        time.sleep(0.01)
    else:
        pytest.fail(f"the pause did not wait for the fire's lock on the schedule: {errors}")
    release.set()
    worker.join(30)
    staff.join(30)

    assert errors == []
    schedule.refresh_from_db()
    assert (schedule.is_paused, schedule.next_fire_at, schedule.last_fired_at) == (True, None, fire_time)
    assert ScheduleFire.objects.get(schedule=schedule).task_id == task.pk
