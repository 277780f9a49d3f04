"""Latency (`latency`): how soon an idle worker starts a task — TaskHub with Redis wake-ups vs Celery + Redis.

Every configuration runs at the same time, each on its own queue with its own workers, in slots:
a period of PERIOD_SECONDS is cut into STREAMS places STAGGER_SECONDS apart, and each stream
sends one task at its place in every period. Each stream's workers are thus idle for a period
less the task's run (≥ IDLE_SECONDS) before each of its tasks, and no two pickups are ever in
flight together (a pickup takes milliseconds; the next place comes STAGGER_SECONDS later).

1. Pickup after idleness, 1 and 4 worker processes: TaskHub (`run_worker` with
   `TASKHUB_WAKEUP_URL`) `created_at` → `started_at`; Celery prefork `--concurrency 1`, the
   sender's clock before sending → the task's first line (same machine, same clock). p50/p99
   over LATENCY_TASKS tasks per configuration (BENCH_LATENCY_TASKS).
2. Scheduled run_at lateness: one idle TaskHub worker; the stream's tasks are due at its places,
   each enqueued 1.15 to 1.35 s before (between two places); lateness = `started_at` − `run_at`.
3. Idle cost, during the same run: IDLE_WORKERS idle TaskHub workers with wake-ups and as many
   without (polling), on queues of their own, for IDLE_WINDOW seconds, each run by
   `bench.counting_worker`, which counts every statement its parent process sends (what MariaDB
   counts as `Questions`: queries, `SET autocommit`, `COMMIT`), SELECTs apart; per worker per
   second. (The server's global counters would mix in every other client of the server.)

Targets (reported, never asserted): pickup p50 ≤ 10 ms and p99 ≤ 50 ms, within 2× of Celery's;
lateness p99 ≤ 50 ms; ≤ 1 query per second per idle worker (with wake-ups).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench import counting_worker, db, taskhub
from bench.context import Context, Unavailable
from bench.procs import StepFailed, python
from bench.stats import percentile, ratio

WORKER_COUNTS = (1, 4)
IDLE_SECONDS = 2.0
LATENCY_TASKS, LATENCY_TASKS_QUICK = 200, 20
# TaskHub 1 and 4 workers, Celery 1 and 4 workers, run_at: one place each per period.
STREAMS = 2 * len(WORKER_COUNTS) + 1
STAGGER_SECONDS = 0.5
PERIOD_SECONDS = STREAMS * STAGGER_SECONDS  # ≥ IDLE_SECONDS + the longest pickup and run
LEAD_SECONDS = 20.0  # from starting the senders to the first place: their warm-up tasks and Celery's ping
IDLE_WORKERS = 4
IDLE_WINDOW, IDLE_WINDOW_QUICK = 20.0, 5.0
SUBSCRIBED = "wake-ups: subscribed at"
STARTED = "wake-ups=off (polling)"
IDLE_QUEUE, POLL_QUEUE = "latency-idle", "latency-idle-polling"
SCHEDULE_TABLES = ("task_schedule_fire", "task_schedule")
TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
TARGET_CELERY_RATIO = 2.0
TARGET_LATENESS_P99_MS = 50.0
TARGET_IDLE_QUERIES = 1.0


def run(ctx: Context) -> dict:
    """Measure every part side by side; a failure of one leaves the others' figures."""
    import redis

    client = redis.Redis.from_url(ctx.cfg.redis_url, socket_connect_timeout=5)
    try:
        client.ping()
        client.flushdb()  # only the benchmark's own Redis database
    except redis.RedisError as exc:
        raise Unavailable(f"Redis at {ctx.cfg.redis_url} does not answer: {exc}") from exc
    database = taskhub.shared_database(ctx)
    count = tasks_per_run(ctx)
    ctx.require_time(LEAD_SECONDS + count * PERIOD_SECONDS + 120, "latency")
    ctx.log(
        f"latency: {STREAMS} streams side by side, {count} tasks each, one every {PERIOD_SECONDS:g} s, "
        f"{STAGGER_SECONDS:g} s apart"
    )
    procs: list = []
    try:
        return _side_by_side(ctx, database, count, procs)
    finally:
        for proc in procs:
            ctx.children.stop(proc)
        client.flushdb()
        client.close()


def _side_by_side(ctx: Context, database: str, count: int, procs: list) -> dict:
    """Start every stream's workers and sender, count the idle workers meanwhile; return the figures."""
    _fresh(ctx, database)
    streams = [("taskhub", n) for n in WORKER_COUNTS] + [("celery", n) for n in WORKER_COUNTS] + [("run_at", 1)]
    names = [_queue(kind, n) for kind, n in streams if kind != "celery"] + [IDLE_QUEUE, POLL_QUEUE]
    taskhub.child(ctx, database, "latency-queues", "--names", ",".join(names), name="latency-queues")
    idle_workers = _idle_workers(ctx, database)
    procs += [proc for group in idle_workers.values() for proc in group]
    results: dict[tuple[str, int], dict] = {}
    for kind, n in streams:
        try:
            procs += _celery_workers(ctx, n) if kind == "celery" else _workers(ctx, database, n, _queue(kind, n))
        except StepFailed as exc:
            ctx.log(f"latency {kind} {n} failed: {exc}")
            results[(kind, n)] = {"error": str(exc)}
    start = time.time() + LEAD_SECONDS
    senders = {
        (kind, n): _sender(ctx, database, kind, n, count, start, place * STAGGER_SECONDS)
        for place, (kind, n) in enumerate(streams)
        if (kind, n) not in results
    }
    procs += senders.values()
    measured: dict = {"idle": _idle(ctx, idle_workers, start)}
    timeout = LEAD_SECONDS + count * PERIOD_SECONDS + 180
    for (kind, n), proc in senders.items():
        try:
            result = ctx.children.result(proc, name=f"latency-{kind}{n}", timeout=timeout)
            results[(kind, n)] = _summary(result["pickup" if kind != "run_at" else "lateness"])
        except (StepFailed, KeyError) as exc:
            ctx.log(f"latency {kind} {n} failed: {exc}")
            results[(kind, n)] = {"error": str(exc)}
    measured["run_at"] = results[("run_at", 1)]
    for kind in ("taskhub", "celery"):
        runs = {str(n): results[(kind, n)] for n in WORKER_COUNTS if "error" not in results[(kind, n)]}
        errors = [results[(kind, n)]["error"] for n in WORKER_COUNTS if "error" in results[(kind, n)]]
        measured[kind] = (
            {"runs": runs, "idle_seconds": PERIOD_SECONDS - STAGGER_SECONDS} if runs else {"error": errors[0]}
        )
    measured["method"] = {"period_seconds": PERIOD_SECONDS, "stagger_seconds": STAGGER_SECONDS, "streams": STREAMS}
    return measured


def tasks_per_run(ctx: Context) -> int:
    default = LATENCY_TASKS_QUICK if ctx.cfg.quick else LATENCY_TASKS
    value = os.environ.get("BENCH_LATENCY_TASKS", "").strip()
    return int(value) if value else default


def percentiles_ms(values: list[float]) -> dict:
    """Return n, p50, p99 and max of `values` (seconds) in milliseconds."""
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "max_ms": max(values) * 1000,
    }


def idle_rate(start: list[dict], end: list[dict]) -> dict:
    """Return the statements and SELECTs per worker per second between two readings of each worker's counts."""
    rates: dict[str, list[float]] = {"statements": [], "selects": []}
    for first, last in zip(start, end, strict=True):
        seconds = last["time"] - first["time"]
        for name, values in rates.items():
            values.append((last[name] - first[name]) / seconds)
    return {name: sum(values) / len(values) for name, values in rates.items() if values}


def verdicts(measured: dict) -> list[tuple[str, float | None, float, str]]:
    """Return (what, measured, target, unit) for every target of the section."""
    rows: list[tuple[str, float | None, float, str]] = []
    taskhub_runs = (measured.get("taskhub") or {}).get("runs", {})
    celery_runs = (measured.get("celery") or {}).get("runs", {})
    for workers in WORKER_COUNTS:
        key = str(workers)
        ours, theirs = taskhub_runs.get(key) or {}, celery_runs.get(key) or {}
        label = f"{workers} worker" + ("s" if workers != 1 else "")
        rows.append((f"pickup p50, {label} (ms)", ours.get("p50_ms"), TARGET_P50_MS, "≤"))
        rows.append((f"pickup p99, {label} (ms)", ours.get("p99_ms"), TARGET_P99_MS, "≤"))
        rows.append(
            (
                f"pickup p50 ÷ Celery+Redis p50, {label}",
                ratio(ours.get("p50_ms"), theirs.get("p50_ms")),
                TARGET_CELERY_RATIO,
                "≤",
            )
        )
    run_at = measured.get("run_at") or {}
    rows.append(("run_at lateness p99 (ms)", run_at.get("p99_ms"), TARGET_LATENESS_P99_MS, "≤"))
    idle = (measured.get("idle") or {}).get("per_worker_per_second") or {}
    rows.append(("statements per idle worker per second", idle.get("statements"), TARGET_IDLE_QUERIES, "≤"))
    return rows


# --- TaskHub ---------------------------------------------------------------------------------


def _queue(kind: str, workers: int) -> str:
    return f"latency-{kind}-{workers}".replace("_", "-")


def _summary(values: list[float]) -> dict:
    return {**percentiles_ms(values), "values": [round(v, 5) for v in values]}


def _workers(
    ctx: Context, database: str, count: int, queue: str, *, counting: bool = False, wakeups: bool = True
) -> list:
    """Start `count` run_worker processes on `queue` (with wake-ups unless told); return them once ready.

    Ready: subscribed to their wake-ups, or started when polling. With `counting`, each is a
    `bench.counting_worker` writing its counts to `<queue><i>.statements.json` in the log folder.
    """
    extra = {"TASKHUB_WAKEUP_URL": ctx.cfg.redis_url} if wakeups else {"TASKHUB_WAKEUP_URL": ""}
    env = ctx.taskhub_env(database, LOG_LEVEL="INFO", **extra)
    ready = SUBSCRIBED if wakeups else STARTED
    procs = []
    for i in range(count):
        if counting:
            env = {**env, "BENCH_STATEMENTS_PATH": str(_statements_path(ctx, queue, i))}
            args = python("-m", "bench.counting_worker", "--queue", queue)
        else:
            args = python("manage.py", "run_worker", "--queue", queue)
        procs.append(ctx.children.spawn(args, env=env, name=f"{queue}{i}"))
    deadline = time.monotonic() + 60
    for proc in procs:
        log = ctx.children.log_of(proc)
        while ready not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                for other in procs:
                    ctx.children.stop(other)
                raise StepFailed(f"{queue}: a worker did not get ready; log {log}")
            time.sleep(0.1)
    return procs


def _statements_path(ctx: Context, queue: str, index: int) -> Path:
    return ctx.children.log_dir / f"{queue}{index}.statements.json"


def _fresh(ctx: Context, database: str) -> None:
    taskhub.reset(ctx, database)
    db.truncate(ctx.cfg, database, SCHEDULE_TABLES)


def _celery_workers(ctx: Context, count: int) -> list:
    from bench.peers.celery_bench import worker_args

    env = {**ctx.mysql_env(), "BENCH_REDIS_URL": ctx.cfg.redis_url}
    queue = _queue("celery", count)
    return [ctx.children.spawn(worker_args(i, 1, queue), env=env, name=f"{queue}-{i}") for i in range(count)]


def _sender(ctx: Context, database: str, kind: str, workers: int, count: int, start: float, offset: float):
    """Start the child sending one stream's tasks at its places; return it (its result comes at the end)."""
    queue = _queue(kind, workers)
    timing = (str(start), str(PERIOD_SECONDS), str(offset))
    if kind == "celery":
        env = {**ctx.mysql_env(), "BENCH_REDIS_URL": ctx.cfg.redis_url}
        args = python("-m", "bench.peers.celery_child", "pickup", str(count), str(workers), queue, *timing)
    else:
        env = ctx.taskhub_env(database, TASKHUB_WAKEUP_URL=ctx.cfg.redis_url)
        command = "pickup" if kind == "taskhub" else "run-at"
        args = python("-m", "bench.child", command, "--count", str(count), "--queue", queue)
        args += ["--start", timing[0], "--period", timing[1], "--offset", timing[2]]
    return ctx.children.spawn(args, env=env, name=f"latency-{kind}{workers}")


def _idle_workers(ctx: Context, database: str) -> dict[str, list]:
    """Start the idle workers, with wake-ups and polling, on queues no task is sent to."""
    started: dict[str, list] = {}
    for queue, wakeups in ((IDLE_QUEUE, True), (POLL_QUEUE, False)):
        try:
            started[queue] = _workers(ctx, database, IDLE_WORKERS, queue, counting=True, wakeups=wakeups)
        except StepFailed as exc:
            ctx.log(f"latency idle workers on {queue} failed: {exc}")
    return started


def _idle(ctx: Context, workers: dict[str, list], start: float) -> dict:
    """Count the idle workers' statements over IDLE_WINDOW seconds once the streams run, then stop them."""
    if IDLE_QUEUE not in workers:
        return {"error": "the idle workers with wake-ups did not start"}
    seconds = IDLE_WINDOW_QUICK if ctx.cfg.quick else IDLE_WINDOW
    ctx.log(f"latency: idle cost, {IDLE_WORKERS} idle workers with wake-ups and {IDLE_WORKERS} polling, {seconds:g} s")
    paths = {queue: [_statements_path(ctx, queue, i) for i in range(IDLE_WORKERS)] for queue in workers}
    try:
        time.sleep(max(start - time.time(), 0.0) + 3)  # start-up claims and heartbeats are not idle cost
        first = {queue: [counting_worker.read(path) for path in files] for queue, files in paths.items()}
        time.sleep(seconds)
        last = {queue: [counting_worker.read(path) for path in files] for queue, files in paths.items()}
    except (OSError, ValueError) as exc:
        return {"error": f"could not read the idle workers' statement counts: {exc}"}
    finally:
        for procs in workers.values():
            for proc in procs:
                ctx.children.stop(proc)
    measured = {
        "workers": IDLE_WORKERS,
        "window_seconds": seconds,
        "per_worker_per_second": idle_rate(first[IDLE_QUEUE], last[IDLE_QUEUE]),
    }
    if POLL_QUEUE in first:
        measured["polling_per_worker_per_second"] = idle_rate(first[POLL_QUEUE], last[POLL_QUEUE])
    return measured
