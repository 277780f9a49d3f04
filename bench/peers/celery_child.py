"""Child side of the Celery peer: `python -m bench.peers.celery_child enqueue N`."""

from __future__ import annotations

import sys
import time

from bench.peers.celery_app import noop
from bench.procs import emit_result


def main(argv: list[str]) -> None:
    """Send N tasks with `.delay()` and print how long it took."""
    count = int(argv[1])
    started = time.perf_counter()
    for i in range(count):
        noop.delay({"n": i})
    emit_result({"count": count, "seconds": time.perf_counter() - started})


if __name__ == "__main__":
    main(sys.argv[1:])
