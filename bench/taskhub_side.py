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


def worker_args(*extra: str) -> list[str]:
    """Return the manage.py arguments of a worker that exits when the queue is drained."""
    return ["manage.py", "run_worker", "--burst", *extra]


def enqueue_per_task(*, user: Any, count: int) -> float:
    """Enqueue `count` echo tasks one `task_enqueue` call each; return the seconds it took."""
    from tasks.services import task_enqueue

    started = time.perf_counter()
    for i in range(count):
        task_enqueue(user=user, task_type="echo", payload={"n": i})
    return time.perf_counter() - started


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
