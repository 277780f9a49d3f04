"""Latency (`latency`): how soon an idle worker starts a task — TaskHub with Redis wake-ups vs Celery + Redis.

1. Pickup after idleness: a child enqueues one no-op every IDLE_SECONDS (the workers are idle
   each time) and the pickup is enqueue → start: TaskHub's `created_at` → `started_at` columns;
   for Celery, the sender's clock before `.delay()` → the task's first line (same machine, same
   clock). 1 and 4 worker processes each (`run_worker` with `TASKHUB_WAKEUP_URL`, Celery prefork
   `--concurrency 1`); p50/p99 over LATENCY_TASKS tasks (BENCH_LATENCY_TASKS).
2. Scheduled run_at lateness: one idle TaskHub worker; each task is enqueued with a run_at 1 to
   1.5 s ahead; lateness = `started_at` − `run_at`.
3. Idle cost: IDLE_WORKERS idle TaskHub workers (wake-ups on) for IDLE_WINDOW seconds, each run
   by `bench.counting_worker`, which counts every statement its parent process sends (what
   MariaDB counts as `Questions`: queries, `SET autocommit`, `COMMIT`), SELECTs apart; per worker
   per second. (The server's global counters would mix in every other client of the server.)

Targets (reported, never asserted): pickup p50 ≤ 10 ms and p99 ≤ 50 ms, within 2× of Celery's;
lateness p99 ≤ 50 ms; ≤ 1 query per second per idle worker.
"""

from __future__ import annotations

import os
import time

from bench import counting_worker, db, taskhub
from bench.context import Context, Unavailable
from bench.procs import StepFailed, python
from bench.stats import percentile, ratio

WORKER_COUNTS = (1, 4)
IDLE_SECONDS = 2.0
LATENCY_TASKS, LATENCY_TASKS_QUICK = 200, 20
RUNAT_TASKS, RUNAT_TASKS_QUICK = 50, 10
IDLE_WORKERS = 4
IDLE_WINDOW, IDLE_WINDOW_QUICK = 20.0, 5.0
SUBSCRIBED = "wake-ups: subscribed at"
SCHEDULE_TABLES = ("task_schedule_fire", "task_schedule")
TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
TARGET_CELERY_RATIO = 2.0
TARGET_LATENESS_P99_MS = 50.0
TARGET_IDLE_QUERIES = 1.0


def run(ctx: Context) -> dict:
    """Measure every part; a failure of one leaves the others' figures."""
    import redis

    client = redis.Redis.from_url(ctx.cfg.redis_url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unavailable(f"Redis at {ctx.cfg.redis_url} does not answer: {exc}") from exc
    finally:
        client.close()
    database = taskhub.shared_database(ctx)
    measured: dict = {}
    for name, func in (("taskhub", _taskhub_pickup), ("celery", _celery_pickup), ("run_at", _run_at), ("idle", _idle)):
        try:
            measured[name] = func(ctx, database)
        except StepFailed as exc:
            ctx.log(f"latency {name} failed: {exc}")
            measured[name] = {"error": str(exc)}
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


def _workers(ctx: Context, database: str, count: int, name: str, *, counting: bool = False) -> list:
    """Start `count` run_worker processes with wake-ups; return them once each has subscribed.

    With `counting`, each is a `bench.counting_worker` writing its counts to `<its log>.json`.
    """
    env = ctx.taskhub_env(database, TASKHUB_WAKEUP_URL=ctx.cfg.redis_url, LOG_LEVEL="INFO")
    procs = []
    for i in range(count):
        if counting:
            env = {**env, "BENCH_STATEMENTS_PATH": str(ctx.children.log_dir / f"{name}{i}.statements.json")}
            args = python("-m", "bench.counting_worker")
        else:
            args = python("manage.py", "run_worker")
        procs.append(ctx.children.spawn(args, env=env, name=f"{name}{i}"))
    deadline = time.monotonic() + 60
    for proc in procs:
        log = ctx.children.log_of(proc)
        while SUBSCRIBED not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                for other in procs:
                    ctx.children.stop(other)
                raise StepFailed(f"{name}: a worker did not subscribe to its wake-ups; log {log}")
            time.sleep(0.1)
    return procs


def _fresh(ctx: Context, database: str) -> None:
    taskhub.reset(ctx, database)
    db.truncate(ctx.cfg, database, SCHEDULE_TABLES)


def _taskhub_pickup(ctx: Context, database: str) -> dict:
    count = tasks_per_run(ctx)
    runs = {}
    for workers in WORKER_COUNTS:
        ctx.require_time(count * IDLE_SECONDS + 90, "latency: TaskHub pickup")
        ctx.log(f"latency: TaskHub pickup, {workers} worker(s), {count} tasks {IDLE_SECONDS:g} s apart")
        _fresh(ctx, database)
        procs = _workers(ctx, database, workers, "latency-worker")
        try:
            result = taskhub.child(
                ctx,
                database,
                *("pickup", "--count", str(count), "--idle", str(IDLE_SECONDS)),
                name="latency-pickup",
                timeout=count * IDLE_SECONDS + 120,
                env={"TASKHUB_WAKEUP_URL": ctx.cfg.redis_url},
            )
        finally:
            for proc in procs:
                ctx.children.stop(proc)
        runs[str(workers)] = {**percentiles_ms(result["pickup"]), "values": [round(v, 5) for v in result["pickup"]]}
    return {"runs": runs, "idle_seconds": IDLE_SECONDS}


def _run_at(ctx: Context, database: str) -> dict:
    count = RUNAT_TASKS_QUICK if ctx.cfg.quick else RUNAT_TASKS
    ctx.require_time(count * 3 + 90, "latency: run_at lateness")
    ctx.log(f"latency: run_at lateness, 1 idle worker, {count} tasks scheduled 1–1.5 s ahead")
    _fresh(ctx, database)
    procs = _workers(ctx, database, 1, "runat-worker")
    try:
        result = taskhub.child(
            ctx,
            database,
            *("run-at", "--count", str(count)),
            name="latency-run-at",
            timeout=count * 3 + 120,
            env={"TASKHUB_WAKEUP_URL": ctx.cfg.redis_url},
        )
    finally:
        for proc in procs:
            ctx.children.stop(proc)
    values = result["lateness"]
    return {**percentiles_ms(values), "values": [round(v, 5) for v in values]}


def _idle(ctx: Context, database: str) -> dict:
    seconds = IDLE_WINDOW_QUICK if ctx.cfg.quick else IDLE_WINDOW
    ctx.require_time(seconds + 90, "latency: idle statements")
    ctx.log(f"latency: idle cost, {IDLE_WORKERS} idle workers for {seconds:g} s")
    _fresh(ctx, database)
    procs = _workers(ctx, database, IDLE_WORKERS, "idle-worker", counting=True)
    paths = [ctx.children.log_dir / f"idle-worker{i}.statements.json" for i in range(IDLE_WORKERS)]
    try:
        time.sleep(3)  # start-up claims and the first heartbeat are not idle cost
        start = [counting_worker.read(path) for path in paths]
        time.sleep(seconds)
        end = [counting_worker.read(path) for path in paths]
    except (OSError, ValueError) as exc:
        raise StepFailed(f"could not read the idle workers' statement counts: {exc}") from exc
    finally:
        for proc in procs:
            ctx.children.stop(proc)
    return {
        "workers": IDLE_WORKERS,
        "window_seconds": seconds,
        "per_worker_per_second": idle_rate(start, end),
    }


# --- Celery + Redis ----------------------------------------------------------------------------


def _celery_pickup(ctx: Context, database: str) -> dict:
    import redis

    from bench.peers.celery_bench import worker_args

    count = tasks_per_run(ctx)
    env = ctx.mysql_env()
    env["BENCH_REDIS_URL"] = ctx.cfg.redis_url
    client = redis.Redis.from_url(ctx.cfg.redis_url, socket_connect_timeout=5)
    runs = {}
    try:
        for workers in WORKER_COUNTS:
            ctx.require_time(count * IDLE_SECONDS + 90, "latency: Celery pickup")
            ctx.log(f"latency: Celery pickup, {workers}×c1, {count} tasks {IDLE_SECONDS:g} s apart")
            client.flushdb()  # only the benchmark's own Redis database
            procs = [ctx.children.spawn(worker_args(i, 1), env=env, name=f"latency-celery{i}") for i in range(workers)]
            try:
                result = ctx.children.run(
                    python("-m", "bench.peers.celery_child", "pickup", str(count), str(IDLE_SECONDS), str(workers)),
                    env=env,
                    name="latency-celery-pickup",
                    timeout=count * IDLE_SECONDS + 180,
                )
            finally:
                for proc in procs:
                    ctx.children.stop(proc)
            runs[str(workers)] = {
                **percentiles_ms(result["pickup"]),
                "values": [round(v, 5) for v in result["pickup"]],
            }
    finally:
        client.flushdb()
        client.close()
    return {"runs": runs, "idle_seconds": IDLE_SECONDS}
