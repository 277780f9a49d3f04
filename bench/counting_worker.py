"""`python -m bench.counting_worker RUN_WORKER_ARGS`: `manage.py run_worker`, counting what its parent sends to MariaDB.

Every statement a mysqlclient connection sends goes through `Connection.query` (cursors),
`autocommit` (when it changes), `commit` or `rollback`; those are wrapped and counted, SELECTs
apart. A thread writes the counts with the time to `BENCH_STATEMENTS_PATH` (JSON) every
WRITE_SECONDS, so the harness reads them at the start and the end of a window. The worker's
forked children inherit the wrappers but not the thread: only the parent's statements count
(an idle worker's children send none).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

WRITE_SECONDS = 0.25

_counts = {"statements": 0, "selects": 0}
_lock = threading.Lock()


def _count(select: bool = False) -> None:
    with _lock:
        _counts["statements"] += 1
        if select:
            _counts["selects"] += 1


def install() -> None:
    """Wrap mysqlclient's Connection so each statement sent is counted."""
    from MySQLdb import connections

    base = connections.Connection

    class Counting(base):  # type: ignore[misc, valid-type]
        def query(self, query: bytes | bytearray | str) -> None:
            text = query if isinstance(query, str) else bytes(query).decode(errors="replace")
            _count(select=text.lstrip().upper().startswith("SELECT"))
            return super().query(query)

        def autocommit(self, on: bool) -> None:
            if self.get_autocommit() != bool(on):
                _count()
            return super().autocommit(on)

        def commit(self) -> None:
            _count()
            return super().commit()

        def rollback(self) -> None:
            _count()
            return super().rollback()

    connections.Connection = Counting  # MySQLdb.connect() looks it up here on every call


def _writer(path: Path) -> None:
    while True:
        with _lock:
            snapshot = {**_counts, "time": time.monotonic()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot))
        tmp.replace(path)
        time.sleep(WRITE_SECONDS)


def read(path: Path) -> dict:
    """Return the last counts a counting worker wrote."""
    return json.loads(path.read_text())


def main(argv: list[str]) -> None:
    install()
    path = Path(os.environ["BENCH_STATEMENTS_PATH"])
    threading.Thread(target=_writer, args=(path,), daemon=True, name="bench-statements").start()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", "run_worker", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
