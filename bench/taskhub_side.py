"""TaskHub adapters: the only place the harness calls TaskHub interfaces built on other branches.

Assumed interfaces (check them against the merged code; a mismatch is reported by `probe()` or
raised as AdapterMismatch with the real signature, never silently measured wrong):

- `tasks.services.task_enqueue(*, user, task_type, payload, ...)` enqueues one task per call,
  in its own transaction (the queue is left to its default).
- `tasks.services.tasks_enqueue_bulk(*, user, <tasks|items|specs>=[{"task_type", "payload"}, ...])`
  enqueues many in one call; `(*, user, task_type, payloads=[...])` is accepted too.
- `manage.py run_worker [--queue NAME] [--concurrency N] [--burst] [--max-tasks N]`; with
  `--burst` it exits (status 0) once nothing is runnable, and it sets `started_at` when a task is
  claimed and `finished_at` when it ends, in `task_queue`.
- HTTP: `POST /api/auth/token/` {"username", "password"} → {"access", "refresh"};
  `GET /api/auth/me/`; `GET /api/tasks/statistics` (`?scope=all` for staff);
  `GET /api/tasks/queue-status`; a liveness path that does not touch the DB (`/health/live`).

Functions taking Django objects run in a child process set up by `bench.child`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

TOKEN_PATH = "/api/auth/token/"
STATISTICS_PATH = "/api/tasks/statistics"
STATISTICS_ALL_PATH = "/api/tasks/statistics?scope=all"
QUEUE_STATUS_PATH = "/api/tasks/queue-status"
WORKER_COMMAND = "run_worker"
BULK_LIST_PARAMETERS = ("tasks", "items", "specs")


class AdapterMismatch(RuntimeError):
    """A merged TaskHub interface does not have the shape the adapter assumes."""


def worker_args(*extra: str) -> list[str]:
    """Return the manage.py arguments of a worker that exits when the queue is drained."""
    return ["manage.py", WORKER_COMMAND, "--burst", *extra]


def probe(*, liveness_path: str, auth_path: str) -> dict[str, str | None]:
    """Return each interface the harness needs → None when present, else why it is missing."""
    from django.core.management import get_commands
    from django.urls import Resolver404, resolve

    found: dict[str, str | None] = {}
    try:
        from tasks import services
    except ImportError as exc:  # pragma: no cover - the foundation ships tasks.services
        services = None
        found["task_enqueue"] = found["tasks_enqueue_bulk"] = f"tasks.services does not import: {exc}"
    if services is not None:
        for name in ("task_enqueue", "tasks_enqueue_bulk"):
            found[name] = None if callable(getattr(services, name, None)) else f"tasks.services.{name} does not exist"
    found["run_worker"] = None if WORKER_COMMAND in get_commands() else f"manage.py has no {WORKER_COMMAND} command"
    paths = {
        "token_url": TOKEN_PATH,
        "auth_url": auth_path,
        "statistics_url": STATISTICS_PATH,
        "queue_status_url": QUEUE_STATUS_PATH,
        "liveness_url": liveness_path,
    }
    for key, path in paths.items():
        try:
            resolve(path.split("?", 1)[0])
            found[key] = None
        except Resolver404:
            found[key] = f"no URL route for {path}"
    return found


def enqueue_per_task(*, user: Any, count: int) -> float:
    """Enqueue `count` echo tasks one service call each; return the seconds it took."""
    from tasks.services import task_enqueue

    started = time.perf_counter()
    for i in range(count):
        task_enqueue(user=user, task_type="echo", payload={"n": i})
    return time.perf_counter() - started


def enqueue_bulk(*, user: Any, count: int, chunk: int) -> float:
    """Enqueue `count` echo tasks through the bulk service, `chunk` per call; return the seconds."""
    from tasks.services import tasks_enqueue_bulk

    call = _bulk_caller(tasks_enqueue_bulk)
    started = time.perf_counter()
    for start in range(0, count, chunk):
        call(user, [{"task_type": "echo", "payload": {"n": i}} for i in range(start, min(start + chunk, count))])
    return time.perf_counter() - started


def _bulk_caller(func: Callable[..., Any]) -> Callable[[Any, list[dict]], Any]:
    """Return how to call the bulk service with a user and task specs, from its signature."""
    params = inspect.signature(func).parameters
    if "user" not in params:
        raise AdapterMismatch(f"tasks_enqueue_bulk{inspect.signature(func)} takes no 'user'")
    for name in BULK_LIST_PARAMETERS:
        if name in params:
            return lambda user, specs: func(user=user, **{name: specs})
    if "payloads" in params and "task_type" in params:
        return lambda user, specs: func(user=user, task_type="echo", payloads=[s["payload"] for s in specs])
    raise AdapterMismatch(
        f"tasks_enqueue_bulk{inspect.signature(func)}: expected a list parameter named one of "
        f"{', '.join(BULK_LIST_PARAMETERS)} (or task_type + payloads)"
    )
