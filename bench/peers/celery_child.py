"""Child side of the Celery peer: `python -m bench.peers.celery_child enqueue N` or `pickup N IDLE WORKERS`."""

from __future__ import annotations

import sys
import time

from bench.peers.celery_app import PICKUP_KEY, _redis, app, noop, stamp
from bench.procs import emit_result

READY_SECONDS = 120


def enqueue(count: int) -> None:
    """Send N tasks with `.delay()` and print how long it took."""
    started = time.perf_counter()
    for i in range(count):
        noop.delay({"n": i})
    emit_result({"count": count, "seconds": time.perf_counter() - started})


def pickup(count: int, idle: float, workers: int) -> None:
    """Once `workers` workers answer, send one task every `idle` seconds; print each one's pickup."""
    deadline = time.monotonic() + READY_SECONDS
    while len(app.control.ping(timeout=1.0) or []) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"fewer than {workers} Celery workers answered within {READY_SECONDS}s")
    client = _redis()
    stamp.delay(time.time())  # warm-up: the first task of a fresh worker process is not idle pickup
    while client.llen(PICKUP_KEY) < 1:
        if time.monotonic() > deadline:
            raise SystemExit("the warm-up task did not run")
        time.sleep(0.05)
    client.delete(PICKUP_KEY)
    for _ in range(count):
        time.sleep(idle)
        stamp.delay(time.time())
    while client.llen(PICKUP_KEY) < count:
        if time.monotonic() > deadline + count * idle:
            raise SystemExit(f"only {client.llen(PICKUP_KEY)} of {count} tasks ran")
        time.sleep(0.05)
    emit_result({"pickup": [float(v) for v in client.lrange(PICKUP_KEY, 0, -1)]})


def main(argv: list[str]) -> None:
    if argv[0] == "enqueue":
        enqueue(int(argv[1]))
    elif argv[0] == "pickup":
        pickup(int(argv[1]), float(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
