"""The `cluster` section of `make bench`, run from the `client` namespace by scripts/cluster/netns-drills.

The rig of the drills (drills.py): a private primary and its replica in `db`, gunicorn on `web1`
and `web2`, worker hosts `work1` and `work2`. Each web host serves TaskHub twice: on :8000 with
`DATABASE_REPLICA_URL` (statistics routed to the replica) and on :8001 without it (everything on the
primary). Each round drains CLUSTER_BENCH_TASKS no-op tasks three times, in an order that turns
each round:

- `idle`: nobody polls the statistics;
- `primary`: a client polls `GET /api/tasks/statistics?scope=all` at CLUSTER_BENCH_POLL_RATE
  requests/s through :8001 of both web hosts (routing off);
- `replica`: the same through :8000 (routing on).

A drain: the tasks are enqueued through both web hosts (bulk, staff scope is the operator's),
then `run_worker --burst --concurrency 4` on both worker hosts; its rate is tasks ÷ (last finish −
first start) from the primary's own timestamps. Last, a quiet window (no worker, no enqueue) in
which only the statistics are polled, routing on then off, counts what the primary served for them
(MariaDB userstat: statements by client address, rows read by table). Writes JSON to CLUSTER_BENCH_OUT.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drills import (  # beside this script: python puts its directory on sys.path
    DB_HOST,
    HOSTS,
    PRIMARY_PORT,
    PY,
    REPLICA_PORT,
    Rig,
    base,
    bulk_enqueue,
    call,
    login,
    sql,
    wait_for,
    web,
)

TASKS = int(os.environ.get("CLUSTER_BENCH_TASKS", "3000"))
ROUNDS = int(os.environ.get("CLUSTER_BENCH_ROUNDS", "3"))
POLL_RATE = float(os.environ.get("CLUSTER_BENCH_POLL_RATE", "20"))
QUIET_SECONDS = float(os.environ.get("CLUSTER_BENCH_QUIET_SECONDS", "5"))
DRAIN_TIMEOUT = float(os.environ.get("CLUSTER_BENCH_DRAIN_TIMEOUT", "120"))
OUT = Path(os.environ["CLUSTER_BENCH_OUT"])
PHASES = ("idle", "primary", "replica")
PORTS = {"primary": 8001, "replica": 8000}
WEB_HOSTS = ("web1", "web2")
WORKER_HOSTS = ("work1", "work2")
# The tables only the statistics read in a quiet window (their counters and the live rows).
STATISTICS_TABLES = ("task_status_count", "task_hourly_stats", "task_queue")


class Poller:
    """GET the statistics at `rate` requests/s, alternating the web hosts, on a fixed schedule."""

    def __init__(self, token: str, port: int, rate: float) -> None:
        self.token, self.port, self.interval = token, port, 1.0 / rate
        self.samples: list[tuple[float, float, int, str]] = []  # (sent, ms, status, source or code)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pool = ThreadPoolExecutor(8)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            self._pool.submit(self._one, WEB_HOSTS[n % len(WEB_HOSTS)])
            n += 1
            self._stop.wait(max(0.0, start + n * self.interval - time.monotonic()))

    def _one(self, host: str) -> None:
        sent = time.monotonic()
        try:
            status, body = call("GET", base(host, self.port) + "/api/tasks/statistics?scope=all", token=self.token)
        except OSError as exc:
            status, body = 0, {"code": type(exc).__name__}
        ms = (time.monotonic() - sent) * 1000
        body = body if isinstance(body, dict) else {}
        where = body.get("source", "") if status == 200 else str(body.get("code", status))
        if body.get("fallback"):
            where = "fallback"
        self.samples.append((sent, ms, status, where))

    def between(self, start: float, end: float) -> list[tuple[float, float, int, str]]:
        return [s for s in self.samples if start <= s[0] <= end]


def answers(samples: list[tuple[float, float, int, str]]) -> dict:
    """Return the latencies in ms and the answers counted by status and source (bench/cluster_bench.py sums them up)."""
    by: dict[str, int] = {}
    for _, _, status, where in samples:
        key = f"{status} {where}".strip()
        by[key] = by.get(key, 0) + 1
    return {"ms": [round(s[1], 2) for s in samples], "answers": by}


def drain(rig: Rig, tokens: dict[str, str], poller_token: str, phase: str, tasks: int = TASKS) -> dict:
    """Enqueue `tasks` through both web hosts, drain them with both worker hosts, poll as the phase says."""
    half = tasks // 2
    with ThreadPoolExecutor(2) as pool:
        parts = list(
            pool.map(lambda job: bulk_enqueue(*job), [("web1", tokens["web1"], half), ("web2", tokens["web2"], tasks - half)])
        )  # fmt: skip
    ids = [i for part in parts for i in part]
    low, high = min(ids), max(ids)
    poller = Poller(poller_token, PORTS[phase], POLL_RATE) if phase in PORTS else None
    if poller:
        poller.__enter__()
        time.sleep(1.0)  # the poll is at its rate before the first claim
    try:
        started = time.monotonic()
        workers = {
            name: rig.hosts[name].start(
                f"burst-{phase}", [PY, "manage.py", "run_worker", "--burst", "--concurrency", "4", "--queue", "default"]
            )
            for name in WORKER_HOSTS
        }
        deadline = started + DRAIN_TIMEOUT
        for name, process in workers.items():
            try:
                process.wait(max(1.0, deadline - time.monotonic()))
            finally:
                rig.hosts[name].stop(process)
        ended = time.monotonic()
    finally:
        if poller:
            poller.__exit__()
    total, succeeded, first, last = sql(
        "SELECT COUNT(*), SUM(status = 'succeeded'), MIN(started_at), MAX(finished_at) FROM task_queue "
        "WHERE id BETWEEN %s AND %s",
        [low, high],
    )[0]
    span = (last - first).total_seconds() if first and last else None
    found = {
        "tasks": tasks,
        "succeeded": int(succeeded or 0),
        "rate": round(tasks / span, 1) if span and int(succeeded or 0) == tasks else None,
        "span_seconds": span,
    }
    if poller:
        found["statistics"] = answers(poller.between(started, ended))
    return found


def userstat(port: int) -> dict:
    """Return the server's statements by web host (SELECTs and all) and rows read by statistics table."""
    clients = dict.fromkeys(WEB_HOSTS, (0, 0))
    addresses = {HOSTS[name]: name for name in WEB_HOSTS}
    for client, selects, total in sql(
        "SELECT CLIENT, SELECT_COMMANDS, SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS "
        "FROM information_schema.CLIENT_STATISTICS",
        port=port,
    ):
        if client in addresses:
            clients[addresses[client]] = (int(selects), int(total))
    marks = ",".join(["%s"] * len(STATISTICS_TABLES))
    rows = dict(
        sql(
            "SELECT TABLE_NAME, ROWS_READ FROM information_schema.TABLE_STATISTICS "
            f"WHERE TABLE_SCHEMA = 'taskhub' AND TABLE_NAME IN ({marks})",
            list(STATISTICS_TABLES),
            port=port,
        )
    )
    return {
        "selects": sum(s for s, _ in clients.values()),
        "statements": sum(t for _, t in clients.values()),
        "rows_read": {table: int(rows.get(table, 0)) for table in STATISTICS_TABLES},
    }


def delta(after: dict, before: dict) -> dict:
    return {
        "selects": after["selects"] - before["selects"],
        "statements": after["statements"] - before["statements"],
        "rows_read": {t: after["rows_read"][t] - before["rows_read"][t] for t in STATISTICS_TABLES},
    }


def statements(token: str) -> dict:
    """Poll only the statistics for QUIET_SECONDS, routing on then off; count what each server ran for the web hosts."""
    counted = {}
    for phase in ("replica", "primary"):
        before = {"primary": userstat(PRIMARY_PORT), "replica": userstat(REPLICA_PORT)}
        with Poller(token, PORTS[phase], POLL_RATE) as poller:
            time.sleep(QUIET_SECONDS)
        time.sleep(0.5)
        after = {"primary": userstat(PRIMARY_PORT), "replica": userstat(REPLICA_PORT)}
        counted[phase] = {
            "requests": len(poller.samples),
            "answers": answers(poller.samples)["answers"],
            "primary": delta(after["primary"], before["primary"]),
            "replica": delta(after["replica"], before["replica"]),
        }
    return counted


def main() -> int:
    rig = Rig()
    results: dict = {"tasks": TASKS, "rounds": [], "poll_rate": POLL_RATE, "phases": list(PHASES)}
    began = time.monotonic()
    try:
        rig.setup(workers=False)
        for name in WEB_HOSTS:
            web(rig.hosts[name], port=PORTS["primary"], label="gunicorn-primary-only", DATABASE_REPLICA_URL="")
        for name in WEB_HOSTS:
            wait_for(f"{name}:8001", lambda n=name: call("GET", base(n, 8001) + "/health/live")[0] == 200, 60)
        tokens = {name: login(name, "alice")["access"] for name in WEB_HOSTS}
        operator = login("web1", "operator")["access"]
        results["setup_seconds"] = round(time.monotonic() - began, 1)
        # A warm-up drain: the first one pays for imports and new connections.
        drain(rig, tokens, operator, "idle", tasks=min(TASKS, 1000))
        for number in range(ROUNDS):
            phases = PHASES[number % 3 :] + PHASES[: number % 3]
            found = {}
            for phase in phases:
                found[phase] = drain(rig, tokens, operator, phase)
                polled = found[phase].get("statistics", {}).get("answers", {})
                print(f"round {number + 1} {phase}: {found[phase]['rate']} tasks/s, statistics {polled}", flush=True)
            results["rounds"].append({"order": list(phases), **found})
        time.sleep(1.0)  # the last writes reach the replica before the quiet window
        results["statements"] = statements(operator)
        results["replica_host"] = f"{DB_HOST}:{REPLICA_PORT}"
    except Exception as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        rig.teardown()
        results["seconds"] = round(time.monotonic() - began, 1)
        OUT.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
