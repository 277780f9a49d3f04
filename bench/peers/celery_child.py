"""Child side of the Celery peer: `python -m bench.peers.celery_child enqueue N` or `pickup N WORKERS QUEUE START PERIOD OFFSET`."""

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


def pickup(count: int, workers: int, queue: str, start: float, period: float, offset: float) -> None:
    """Once `workers` workers answer, send one task on `queue` at start + offset + i·period; print each pickup."""
    from bench.taskhub_side import sleep_until

    key = f"{PICKUP_KEY}:{queue}"
    deadline = time.monotonic() + READY_SECONDS
    while len(app.control.ping(timeout=1.0) or []) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"fewer than {workers} Celery workers answered within {READY_SECONDS}s")
    client = _redis()
    # Warm-up: the first task of a fresh worker process is not idle pickup.
    stamp.apply_async((time.time(), key), queue=queue)
    while client.llen(key) < 1:
        if time.monotonic() > deadline:
            raise SystemExit("the warm-up task did not run")
        time.sleep(0.05)
    client.delete(key)
    for i in range(count):
        sleep_until(start + offset + i * period)
        stamp.apply_async((time.time(), key), queue=queue)
    finish = time.monotonic() + 60
    while client.llen(key) < count:
        if time.monotonic() > finish:
            raise SystemExit(f"only {client.llen(key)} of {count} tasks ran")
        time.sleep(0.05)
    emit_result({"pickup": [float(v) for v in client.lrange(key, 0, -1)]})


def main(argv: list[str]) -> None:
    if argv[0] == "enqueue":
        enqueue(int(argv[1]))
    elif argv[0] == "pickup":
        pickup(int(argv[1]), int(argv[2]), argv[3], float(argv[4]), float(argv[5]), float(argv[6]))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
