"""The TaskHub interfaces the harness calls, in one place (docs/WORKERS.md, docs/API.md).

Functions taking Django objects run in a child process set up by `bench.child`.
"""

from __future__ import annotations

import time
from typing import Any

TOKEN_PATH = "/api/auth/token/"
STATISTICS_PATH = "/api/tasks/statistics"
STATISTICS_ALL_PATH = "/api/tasks/statistics?scope=all"
QUEUE_STATUS_PATH = "/api/tasks/queue-status"
ONE_READ_PATH = "/bench/one-read"  # served by bench.taskhub_urls
# How long before its run_at a scheduled task is enqueued: between two slots 0.5 s apart.
RUN_AT_AHEAD = (1.15, 1.35)


def worker_args(*extra: str) -> list[str]:
    """Return the manage.py arguments of a worker that exits when the queue is drained."""
    return ["manage.py", "run_worker", "--burst", *extra]


def enqueue_per_task(*, user: Any, count: int, unique: bool = False) -> float:
    """Enqueue `count` echo tasks one `task_enqueue` call each (with `unique`, each its own unique_key); return the seconds."""
    from tasks.services import task_enqueue

    started = time.perf_counter()
    if unique:
        for i in range(count):
            task_enqueue(user=user, task_type="echo", payload={"n": i}, unique_key=f"bench-{i}")
    else:
        for i in range(count):
            task_enqueue(user=user, task_type="echo", payload={"n": i})
    return time.perf_counter() - started


def backlog(*, user: Any, count: int, seconds: float, chunk: int = 500) -> float:
    """Enqueue `count` sleep tasks of `seconds` each in bulk (work that keeps workers busy); return the seconds."""
    from tasks.services import tasks_enqueue_bulk
    from tasks.specs import TaskSpec

    started = time.perf_counter()
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        tasks_enqueue_bulk(user=user, specs=[TaskSpec(task_type="sleep", payload={"seconds": seconds})] * size)
    return time.perf_counter() - started


def schedule_every_second(*, user: Any) -> int:
    """Replace every schedule with one that fires every second (cron with seconds); return its id."""
    from tasks.models import Schedule
    from tasks.schedule_services import schedule_create

    Schedule.objects.all().delete()
    schedule = schedule_create(
        user=user, data={"name": "bench-every-second", "cron": "* * * * * *", "task_type": "echo"}
    )
    return schedule.pk


def schedule_lateness(*, schedule_id: int) -> dict[str, Any]:
    """Return each fire time's lateness (fire time → task created, seconds), the fire times and the span they cover."""
    from tasks.models import Schedule, ScheduleFire

    Schedule.objects.filter(pk=schedule_id).update(is_paused=True, next_fire_at=None)
    fires = list(
        ScheduleFire.objects.filter(schedule_id=schedule_id, task__isnull=False)
        .select_related("task")
        .order_by("fire_time")
    )
    lateness = [(fire.task.created_at - fire.fire_time).total_seconds() for fire in fires]
    span = (fires[-1].fire_time - fires[0].fire_time).total_seconds() if fires else 0.0
    return {"lateness": lateness, "fires": len(fires), "span_seconds": span}


def enqueue_bulk(*, user: Any, count: int, chunk: int) -> float:
    """Enqueue `count` echo tasks through `tasks_enqueue_bulk`, `chunk` per call; return the seconds."""
    from tasks.services import tasks_enqueue_bulk
    from tasks.specs import TaskSpec

    started = time.perf_counter()
    for start in range(0, count, chunk):
        specs = [TaskSpec(task_type="echo", payload={"n": i}) for i in range(start, min(start + chunk, count))]
        tasks_enqueue_bulk(user=user, specs=specs)
    return time.perf_counter() - started


def enqueue_django(*, count: int) -> float:
    """Enqueue `count` Django tasks with `.enqueue()`, one call each (TaskHubBackend); return the seconds."""
    from bench.peers.djtasks_tasks import noop

    started = time.perf_counter()
    for i in range(count):
        noop.enqueue({"n": i})
    return time.perf_counter() - started


def _wait_finished(pks: list[int], timeout: float) -> None:
    from tasks.models import TaskQueue, TaskStatus

    deadline = time.monotonic() + timeout
    while TaskQueue.objects.filter(pk__in=pks, status=TaskStatus.SUCCEEDED).count() < len(pks):
        if time.monotonic() > deadline:
            raise RuntimeError(f"tasks {pks[:5]}… did not all succeed within {timeout:.0f}s")
        time.sleep(0.05)


def sleep_until(moment: float) -> None:
    """Sleep until `moment` (time.time()); refuse a slot already missed."""
    left = moment - time.time()
    if left < 0:
        raise RuntimeError(f"a slot was missed by {-left:.3f}s: the machine is too busy for the latency section")
    time.sleep(left)


def latency_queues(*, names: list[str]) -> None:
    """Create the latency section's queues (one per configuration measured side by side)."""
    from tasks.models import QueueConfig

    for name in names:
        QueueConfig.objects.get_or_create(name=name)


def pickup(*, user: Any, count: int, queue: str, start: float, period: float, offset: float) -> list[float]:
    """Enqueue an echo task on `queue` at start + offset + i·period (after a warm-up one); return each one's pickup.

    The pickup is created_at → started_at. Its worker was idle since the previous task of its
    queue, one `period` earlier less its run (no-op).
    """
    from tasks.models import TaskQueue
    from tasks.services import task_enqueue

    _wait_finished([task_enqueue(user=user, task_type="echo", queue=queue).task.pk], timeout=60)
    pks = []
    for i in range(count):
        sleep_until(start + offset + i * period)
        pks.append(task_enqueue(user=user, task_type="echo", queue=queue, payload={"n": i}).task.pk)
    _wait_finished(pks, timeout=60)
    rows = TaskQueue.objects.filter(pk__in=pks).values_list("created_at", "started_at")
    return [(started - created).total_seconds() for created, started in rows]


def run_at_lateness(*, user: Any, count: int, queue: str, start: float, period: float, offset: float) -> list[float]:
    """Enqueue echo tasks on `queue` due at start + offset + i·period, RUN_AT_AHEAD before; return their lateness.

    The lateness is run_at → started_at. Each is enqueued between two other slots (the ahead
    times are not multiples of the harness's stagger), so its wake-up never meets a pickup.
    """
    import random
    from datetime import UTC, datetime

    from tasks.models import TaskQueue
    from tasks.services import task_enqueue

    _wait_finished([task_enqueue(user=user, task_type="echo", queue=queue).task.pk], timeout=60)
    pks = []
    for i in range(count):
        due = start + offset + i * period
        sleep_until(due - random.uniform(*RUN_AT_AHEAD))
        run_at = datetime.fromtimestamp(due, UTC)
        pks.append(task_enqueue(user=user, task_type="echo", queue=queue, payload={"n": i}, run_at=run_at).task.pk)
    _wait_finished(pks, timeout=60)
    rows = TaskQueue.objects.filter(pk__in=pks).values_list("run_at", "started_at")
    return [(started - run_at).total_seconds() for run_at, started in rows]


def fair_queue(*, fairness: str) -> None:
    """Set the default queue's fairness mode (the bench's tasks all go there)."""
    from tasks.models import QueueConfig
    from tasks.services import queue_update

    queue_update(queue=QueueConfig.objects.get(name="default"), changes={"fairness": fairness})


def fair_enqueue(*, owners: list[Any], count: int, chunk: int = 500) -> dict[str, Any]:
    """Enqueue `count` echo tasks spread evenly over `owners` in bulk; return the first id and the seconds."""
    from tasks.services import tasks_enqueue_bulk
    from tasks.specs import TaskSpec

    started = time.perf_counter()
    first_id = None
    for index, owner in enumerate(owners):
        share = count // len(owners) + (1 if index < count % len(owners) else 0)
        for start in range(0, share, chunk):
            size = min(chunk, share - start)
            result = tasks_enqueue_bulk(user=owner, specs=[TaskSpec(task_type="echo")] * size)
            first_id = min(first_id or result.tasks[0].pk, result.tasks[0].pk)
    return {"first_id": first_id, "count": count, "seconds": time.perf_counter() - started}


def fair_waits(*, first_id: int, timeout: float) -> dict[str, Any]:
    """Wait until the tasks from `first_id` on have all started; return each one's wait.

    A task's wait: the tasks started after it was enqueued and before it, and the ms in between.
    """
    from tasks.models import TaskQueue

    mine = TaskQueue.objects.filter(id__gte=first_id)
    deadline = time.monotonic() + timeout
    while mine.filter(started_at__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    waits = []
    for task in mine.filter(started_at__isnull=False):
        before = TaskQueue.objects.filter(started_at__gte=task.created_at, started_at__lt=task.started_at)
        waits.append(
            {
                "tasks_before": before.exclude(id__gte=first_id).count(),
                "ms": (task.started_at - task.created_at).total_seconds() * 1000,
            }
        )
    return {"waits": waits}
