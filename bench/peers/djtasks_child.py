"""Child side of the django-tasks-db peer: `python -m bench.peers.djtasks_child migrate|enqueue N`."""

from __future__ import annotations

import os
import sys
import time

import django


def main(argv: list[str]) -> None:
    """Migrate the peer's database, or enqueue N tasks and print how long it took."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.djtasks_settings")
    django.setup()
    from django.core.management import call_command

    from bench.procs import emit_result

    if argv[0] == "migrate":
        call_command("migrate", interactive=False, verbosity=0)
        emit_result({})
    elif argv[0] == "enqueue":
        from bench.peers.djtasks_tasks import noop

        count = int(argv[1])
        started = time.perf_counter()
        for i in range(count):
            noop.enqueue({"n": i})
        emit_result({"count": count, "seconds": time.perf_counter() - started})
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
