"""The hour rollup: rolled up from the minute rows, read by the 24-hour and 7-day charts with the minutes after its mark."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tasks import console_selectors, counters, hour_stats
from tasks.histograms import RUN_COLUMNS, WAIT_COLUMNS, percentiles
from tasks.models import QueueConfig, TaskHourStats, TaskHourStatsMark, TaskMinuteStats, TaskStatus
from tasks.retention import hour_stats_prune
from tasks.tests.factories import finished_fields, make_task
from tasks.worker.db import WorkerDatabase

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 6, 18, 3, 20, tzinfo=UTC)
COLUMNS = counters.MINUTE_EVENT_COLUMNS
COUNTS = ("started", "succeeded", "failed", "cancelled")


def minute_row(queue: QueueConfig, minute: datetime, rng: random.Random) -> TaskMinuteStats:
    row = TaskMinuteStats(queue=queue, minute=minute)
    for column in COLUMNS:
        setattr(row, column, rng.randint(0, 3) if rng.random() < 0.5 else 0)
    row.started = sum(getattr(row, column) for column in WAIT_COLUMNS)
    return row


@pytest.fixture
def history(default_queue) -> list[QueueConfig]:
    """Minute rows of two queues over 9 days (every 7th minute), and every minute of the last 2 hours."""
    other = QueueConfig.objects.create(name="other")
    rng = random.Random(17)
    start = NOW.replace(second=0) - timedelta(days=9)
    minutes = {start + timedelta(minutes=offset) for offset in range(0, 9 * 24 * 60, 7)}
    minutes |= {NOW.replace(second=0) - timedelta(minutes=offset) for offset in range(120)}
    rows = [minute_row(queue, minute, rng) for minute in sorted(minutes) for queue in (default_queue, other)]
    TaskMinuteStats.objects.bulk_create(rows, batch_size=500)
    return [default_queue, other]


def expected_points(range_name: str, queue: QueueConfig | None, now: datetime = NOW) -> list[dict]:
    """The chart's points computed in Python from the minute rows alone, one per hour."""
    hours = console_selectors.CHART_RANGES[range_name][0]
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    sums = {first + timedelta(hours=index): dict.fromkeys(COLUMNS, 0) for index in range(hours)}
    rows = TaskMinuteStats.objects.all() if queue is None else TaskMinuteStats.objects.filter(queue=queue)
    for row in rows:
        hour = row.minute.astimezone(UTC).replace(minute=0)
        if hour in sums:
            for column in COLUMNS:
                sums[hour][column] += getattr(row, column)
    return [
        {
            "at": hour,
            **{column: values[column] for column in COUNTS},
            "wait": percentiles([values[column] for column in WAIT_COLUMNS]),
            "run": percentiles([values[column] for column in RUN_COLUMNS]),
        }
        for hour, values in sorted(sums.items())
    ]


def chart_points(range_name: str, queue: QueueConfig | None, now: datetime = NOW) -> list[dict]:
    chart = console_selectors.chart(range_name=range_name, queue_name=queue.name if queue else None, now=now)
    return console_selectors.as_json(chart)["points"]


def hour_rows() -> dict:
    return {(row["queue_id"], row["hour"]): row for row in TaskHourStats.objects.values("queue_id", "hour", *COLUMNS)}


def roll_up_until_done(now: datetime) -> None:
    while hour_stats.roll_up_hours(now=now):
        pass


@pytest.mark.parametrize("rolled_up_at", [None, NOW - timedelta(hours=30), NOW - timedelta(days=3), NOW])
def test_the_hourly_charts_equal_the_minutes_summed_however_far_the_mark_lags(history, rolled_up_at):
    if rolled_up_at is not None:
        roll_up_until_done(rolled_up_at)
        assert hour_stats.rolled_up_to() == (rolled_up_at - hour_stats.HOUR_ROLL_UP_GRACE).replace(
            minute=0, second=0, microsecond=0
        )
    for range_name in ("24h", "7d"):
        for queue in (None, *history):
            assert chart_points(range_name, queue) == expected_points(range_name, queue), (range_name, queue)


def test_the_hourly_charts_read_the_hours_before_the_mark_from_the_hour_rollup(history):
    roll_up_until_done(NOW)
    mark = hour_stats.rolled_up_to()
    before = chart_points("7d", None)
    row = TaskHourStats.objects.filter(hour=mark - timedelta(hours=2)).first()
    row.succeeded += 1000
    row.save()
    after = chart_points("7d", None)
    changed = [(b["at"], a["succeeded"] - b["succeeded"]) for a, b in zip(after, before, strict=True) if a != b]
    assert changed == [(mark - timedelta(hours=2), 1000)]


def test_the_roll_up_is_idempotent_and_catches_a_late_minute_inside_the_grace(history):
    default_queue = history[0]
    early = NOW.replace(minute=2)  # inside the grace: the last hour is not over for the roll-up yet
    roll_up_until_done(early)
    last_hour = NOW.replace(minute=0, second=0) - timedelta(hours=1)
    assert hour_stats.rolled_up_to() == last_hour
    rows = hour_rows()
    assert not hour_stats.roll_up_hours(now=early)
    assert hour_rows() == rows

    # A batch that finished at 17:59 is flushed at 18:04; the roll-up after the grace counts it.
    late, _ = TaskMinuteStats.objects.get_or_create(
        queue=default_queue, minute=NOW.replace(minute=0, second=0) - timedelta(minutes=1)
    )
    late.succeeded += 5
    late.save()
    # And one two hours back, after its hour was rolled up: the hour before the mark is redone too.
    older = TaskMinuteStats.objects.filter(queue=default_queue, minute__lt=last_hour).order_by("-minute").first()
    older.failed += 3
    older.save()
    after_grace = NOW.replace(minute=6)
    roll_up_until_done(after_grace)
    assert hour_stats.rolled_up_to() == NOW.replace(minute=0, second=0)
    again = hour_rows()
    assert again[(default_queue.pk, last_hour)]["succeeded"] == expected_sum(default_queue, last_hour, "succeeded")
    assert again[(default_queue.pk, last_hour - timedelta(hours=1))]["failed"] == expected_sum(
        default_queue, last_hour - timedelta(hours=1), "failed"
    )
    assert not hour_stats.roll_up_hours(now=after_grace)
    assert hour_rows() == again
    # Run afresh it changes nothing either (two processes running it at once write the same rows).
    TaskHourStatsMark.objects.all().delete()
    roll_up_until_done(after_grace)
    assert hour_rows() == again


def expected_sum(queue: QueueConfig, hour: datetime, column: str) -> int:
    rows = TaskMinuteStats.objects.filter(queue=queue, minute__gte=hour, minute__lt=hour + timedelta(hours=1))
    return sum(getattr(row, column) for row in rows)


def test_the_mark_never_moves_back(history):
    roll_up_until_done(NOW)
    hour_stats.roll_up_hours(now=NOW - timedelta(days=2))  # a process with a slow clock
    assert hour_stats.rolled_up_to() == NOW.replace(minute=0, second=0) - timedelta(hours=1)


def test_a_catch_up_is_done_a_day_a_statement(history):
    with CaptureQueriesContext(connection) as queries:
        assert hour_stats.roll_up_hours(now=NOW)
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT INTO task_hour_stats ")]
    assert len(inserts) == 1 and len(queries.captured_queries) == 3
    first = (NOW - timedelta(days=8)).replace(minute=0, second=0)
    assert hour_stats.rolled_up_to() == first + timedelta(hours=hour_stats.HOUR_ROLL_UP_MAX_HOURS)


def test_rebuild_task_stats_rolls_the_hours_up_afresh_from_the_minutes(alice, default_queue):
    now = datetime.now(UTC)
    for ago in (timedelta(days=10), timedelta(days=3), timedelta(hours=30), timedelta(hours=2), timedelta(minutes=3)):
        make_task(alice, **finished_fields(TaskStatus.SUCCEEDED, created=now - ago))
    stale = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    TaskHourStats.objects.create(queue=default_queue, hour=stale, succeeded=99)
    TaskHourStatsMark.objects.create(pk=1, rolled_up_to=now + timedelta(days=1))
    out = StringIO()
    call_command("rebuild_task_stats", stdout=out)

    mark = hour_stats.rolled_up_to()
    assert mark == (datetime.now(UTC) - hour_stats.HOUR_ROLL_UP_GRACE).replace(minute=0, second=0, microsecond=0)
    expected: dict = {}
    for row in TaskMinuteStats.objects.filter(minute__lt=mark):
        key = (row.queue_id, row.minute.astimezone(UTC).replace(minute=0))
        sums = expected.setdefault(key, dict.fromkeys(COLUMNS, 0))
        for column in COLUMNS:
            sums[column] += getattr(row, column)
    assert len(expected) == 3  # 10 days ago is past the minute rollup's retention; 3 minutes ago is after the mark
    assert {key: {column: row[column] for column in COLUMNS} for key, row in hour_rows().items()} == expected
    assert "3 per-hour row(s)" in out.getvalue()


def test_purge_tasks_prunes_the_hour_rollup_past_its_retention(default_queue):
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for days in (9, 1):
        TaskHourStats.objects.create(queue=default_queue, hour=now - timedelta(days=days), succeeded=1)
    out = StringIO()
    call_command("purge_tasks", "--older-than", "30", stdout=out)
    assert "Deleted 0 per-minute and 1 per-hour statistics row(s) older than 8 days." in out.getvalue()
    assert list(TaskHourStats.objects.values_list("hour", flat=True)) == [now - timedelta(days=1)]


def test_retention_prunes_old_hours(history):
    roll_up_until_done(NOW)
    cutoff = NOW - timedelta(days=7)
    older = TaskHourStats.objects.filter(hour__lt=cutoff).count()
    assert older
    total = TaskHourStats.objects.count()
    assert hour_stats_prune(before=cutoff, batch_size=7) == older
    assert TaskHourStats.objects.count() == total - older
    assert not TaskHourStats.objects.filter(hour__lt=cutoff).exists()


def test_a_worker_rolls_up_at_most_once_an_hour(history, monkeypatch):
    db = WorkerDatabase(worker_id="host:1:hours", queue_names=[], concurrency=1)
    clock = [NOW.timestamp()]
    monkeypatch.setattr("tasks.worker.db.time.time", lambda: clock[0])
    monkeypatch.setattr("tasks.hour_stats.datetime", FrozenDatetime(clock))
    last_hour = NOW.replace(minute=0, second=0) - timedelta(hours=1)
    for _ in range(12):  # 8 days to catch up on: a day a heartbeat
        db.roll_up_hours()
        if hour_stats.rolled_up_to() == last_hour:
            break
    assert hour_stats.rolled_up_to() == last_hour
    clock[0] += 60  # 18:04:20: the 17:00 hour's grace is not over, not its turn, and no statement to find that out
    with CaptureQueriesContext(connection) as queries:
        db.roll_up_hours()
    assert queries.captured_queries == []
    clock[0] += 2 * 60 * 60  # 20:04: its turn
    db.roll_up_hours()
    assert hour_stats.rolled_up_to() == NOW.replace(minute=0, second=0) + timedelta(hours=1)
    clock[0] += 30  # 20:04:50: the next turn is after 20:05
    with CaptureQueriesContext(connection) as queries:
        db.roll_up_hours()
    assert queries.captured_queries == []


def test_a_worker_s_next_hourly_turn_is_just_after_the_next_hour_s_grace(history, monkeypatch):
    db = WorkerDatabase(worker_id="host:1:hours", queue_names=[], concurrency=1)
    clock = [NOW.timestamp()]
    monkeypatch.setattr("tasks.worker.db.time.time", lambda: clock[0])
    monkeypatch.setattr("tasks.hour_stats.datetime", FrozenDatetime(clock))
    monkeypatch.setattr("tasks.worker.db.random.uniform", lambda low, high: low)  # no jitter
    rolls = []
    monkeypatch.setattr("tasks.worker.db.hour_stats.roll_up_hours", lambda: rolls.append(clock[0]) or False)
    db.roll_up_hours()  # 18:03:20, due at start-up
    # 18:05: the 17:00 hour's grace is over (its turn, without the jitter)
    turn = (NOW.replace(minute=0, second=0) + hour_stats.HOUR_ROLL_UP_GRACE).timestamp()
    for at in (turn - 1.5, turn - 0.5, turn, turn + 0.5):  # 18:04:58.5 .. 18:05:00.5
        clock[0] = at
        db.roll_up_hours()
    assert rolls == [NOW.timestamp(), turn]


class FrozenDatetime:
    """`datetime` for tasks.hour_stats with `now()` reading a test's clock."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock

    def now(self, tz=None) -> datetime:
        return datetime.fromtimestamp(self.clock[0], tz)

    def __getattr__(self, name):
        return getattr(datetime, name)
