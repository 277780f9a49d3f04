"""Task types for the worker tests only: loaded by the tests and, through
TASKHUB_EXTRA_HANDLER_MODULES, by the worker processes they start. Never by the product."""

from __future__ import annotations

import os
import time
from typing import Any

from django.db import connection, transaction

from tasks.registry import TaskContext, register

EXECUTIONS_TABLE = "worker_test_execution"
_DDL = {
    "mysql": (
        f"CREATE TABLE IF NOT EXISTS {EXECUTIONS_TABLE} (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        "task_id BIGINT NOT NULL, attempt INT NOT NULL, worker VARCHAR(128) NOT NULL, pid INT NOT NULL, "
        "started DOUBLE NOT NULL, finished DOUBLE NOT NULL, UNIQUE KEY task_attempt (task_id, attempt)) ENGINE=InnoDB"
    ),
    "sqlite": (
        f"CREATE TABLE IF NOT EXISTS {EXECUTIONS_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "task_id INTEGER NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL, pid INTEGER NOT NULL, "
        "started REAL NOT NULL, finished REAL NOT NULL, UNIQUE (task_id, attempt))"
    ),
}


def create_executions_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(_DDL[connection.vendor])
        cursor.execute(f"DELETE FROM {EXECUTIONS_TABLE}")


def drop_executions_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {EXECUTIONS_TABLE}")


def executions() -> list[tuple]:
    """Return (task_id, attempt, worker, pid, started, finished) rows in execution order."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT task_id, attempt, worker, pid, started, finished FROM {EXECUTIONS_TABLE} ORDER BY id")
        return list(cursor.fetchall())


def _record(ctx: TaskContext, started: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {EXECUTIONS_TABLE} (task_id, attempt, worker, pid, started, finished) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [ctx.task_id, ctx.attempt, getattr(ctx, "worker_id", ""), os.getpid(), started, time.time()],
        )


@register("test.record", description="Sleep payload['sleep'] s, then record the execution.")
def record(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    started = time.time()
    time.sleep(payload.get("sleep", 0))
    _record(ctx, started)
    return {"worker": getattr(ctx, "worker_id", ""), "pid": os.getpid()}


@register("test.record_then_fail", description="Record the execution, then raise.")
def record_then_fail(payload: dict[str, Any], ctx: TaskContext) -> None:
    _record(ctx, time.time())
    raise RuntimeError(payload.get("message", "boom"))


@register("test.hang", description="Sleep payload['seconds'] s, ignoring cancellation.")
def hang(payload: dict[str, Any], ctx: TaskContext) -> str:
    time.sleep(payload.get("seconds", 3600))
    return "woke up"


@register("test.unserialisable", description="Return something JSON cannot hold.")
def unserialisable(payload: dict[str, Any], ctx: TaskContext) -> object:
    return {"value": object()}


@register("test.crash", description="Kill the process running the handler.")
def crash(payload: dict[str, Any], ctx: TaskContext) -> None:
    os._exit(3)


@register("test.leave_transaction_open", description="Enter a transaction and never leave it.")
def leave_transaction_open(payload: dict[str, Any], ctx: TaskContext) -> str:
    transaction.atomic().__enter__()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "left open"


@register("test.marks", description="Write start, alive and stop marks to payload['file'] for payload['seconds'].")
def marks(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run for payload['seconds'] (a number, or one per attempt: {"1": 30, "2": 0.5}), marking as it goes.

    Each line is "task attempt pid kind wall-time", kind start, alive (every 20 ms) or stop, so
    a test sees when each run began and the last moment it was still running, even if killed.
    """
    seconds = payload["seconds"]
    if isinstance(seconds, dict):
        seconds = seconds[str(ctx.attempt)]

    def mark(kind: str) -> None:
        with open(payload["file"], "a") as marks_file:
            marks_file.write(f"{ctx.task_id} {ctx.attempt} {os.getpid()} {kind} {time.time():.6f}\n")

    mark("start")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)
        mark("alive")
    mark("stop")
    return {"attempt": ctx.attempt, "pid": os.getpid()}


def runs_in_marks(path: str) -> dict[tuple[int, int], tuple[float, float, bool]]:
    """Return {(task, attempt): (first mark, last mark, stopped normally)} from a marks file."""
    runs: dict[tuple[int, int], tuple[float, float, bool]] = {}
    if not os.path.exists(path):
        return runs
    with open(path) as marks_file:
        for line in marks_file:
            task_id, attempt, _pid, kind, at = line.split()
            key = (int(task_id), int(attempt))
            first, _last, _stopped = runs.get(key, (float(at), 0.0, False))
            runs[key] = (first, float(at), kind == "stop")
    return runs
