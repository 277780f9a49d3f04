"""Schedules and unique tasks (`schedules`): lateness of an every-second schedule, and enqueue with a unique_key.

1. Lateness: a 5,000-task backlog of short sleeps keeps two `run_worker` processes busy while an
   every-second schedule (`* * * * * *`) fires for LATENESS_SECONDS; each fire time's lateness is
   its task's `created_at` minus the fire time, read from the database afterwards. Target: p99 < 1.5 s.
2. Enqueue: `task_enqueue` once per task, plain and with a distinct `unique_key` each, in turn each
   round (the generated column and its unique index are what the key costs). Target: ≥ 0.8 × plain.
"""

from __future__ import annotations

import time

from bench import db, taskhub
from bench.context import Context
from bench.procs import StepFailed, python
from bench.shortcuts import in_turn
from bench.stats import median_of, percentile, ratio, summarize

LATENESS_SECONDS = 60.0
LATENESS_SECONDS_QUICK = 15.0
BACKLOG_TASK_SECONDS = 0.03  # 5,000 of them keep two workers (one child each) busy past the window
WORKERS = 2
WORKER_START_SECONDS = 5.0
TARGET_P99_SECONDS = 1.5
TARGET_UNIQUE_RATIO = 0.8
PLAIN, UNIQUE = "plain", "unique_key"
SCHEDULE_TABLES = ("task_schedule_fire",)


def run(ctx: Context) -> dict:
    """Measure both; a failure of one leaves the other's figures."""
    database = taskhub.shared_database(ctx)
    measured = {}
    for name, func in (("enqueue", _enqueue), ("lateness", _lateness)):
        try:
            measured[name] = func(ctx, database)
        except StepFailed as exc:
            ctx.log(f"schedules {name} failed: {exc}")
            measured[name] = {"error": str(exc)}
    return measured


def lateness_summary(lateness: list[float], *, fires: int, seconds: float) -> dict:
    """Return p50/p99/max of the lateness values and how many fire times there were against the window."""
    if not lateness:
        return {"fires": fires, "window_seconds": seconds, "p50": None, "p99": None, "max": None}
    return {
        "fires": fires,
        "window_seconds": seconds,
        "p50": percentile(lateness, 50),
        "p99": percentile(lateness, 99),
        "max": max(lateness),
        "target_p99": TARGET_P99_SECONDS,
        "meets_target": percentile(lateness, 99) < TARGET_P99_SECONDS,
    }


def unique_ratio(rates: dict[str, list[float]]) -> float | None:
    """Return the median rate with a unique_key ÷ the median plain rate."""
    return ratio(median_of(summarize(rates.get(UNIQUE, []))), median_of(summarize(rates.get(PLAIN, []))))


def _enqueue(ctx: Context, database: str) -> dict:
    cfg = ctx.cfg
    rates: dict[str, list[float]] = {PLAIN: [], UNIQUE: []}
    for rep in range(cfg.repeats):
        for variant in in_turn([PLAIN, UNIQUE], rep):
            ctx.require_time(cfg.step_estimate(cfg.tasks), "schedules enqueue A/B")
            ctx.log(f"schedules: enqueue per task, rep {rep + 1}, {variant}, {cfg.tasks} tasks")
            taskhub.reset(ctx, database)
            extra = ("--unique",) if variant == UNIQUE else ()
            done = taskhub.child(
                ctx,
                database,
                *("enqueue", "--mode", "per-task", "--count", str(cfg.tasks), *extra),
                name=f"enqueue-{variant}",
                timeout=cfg.step_timeout(cfg.tasks),
            )
            rates[variant].append(done["count"] / done["seconds"])
    found = unique_ratio(rates)
    return {
        "unit": "tasks/s",
        "rates": rates,
        "ratio": found,
        "target_ratio": TARGET_UNIQUE_RATIO,
        "meets_target": found is not None and found >= TARGET_UNIQUE_RATIO,
    }


def _lateness(ctx: Context, database: str) -> dict:
    cfg = ctx.cfg
    seconds = LATENESS_SECONDS_QUICK if cfg.quick else LATENESS_SECONDS
    backlog = 5000 if not cfg.quick else 1500
    ctx.require_time(seconds + WORKER_START_SECONDS + 120, "schedules lateness")
    taskhub.reset(ctx, database)
    db.truncate(ctx.cfg, database, SCHEDULE_TABLES)
    ctx.log(f"schedules: {backlog} sleep tasks of {BACKLOG_TASK_SECONDS}s, {WORKERS} workers, {seconds:.0f}s of fires")
    taskhub.child(
        ctx,
        database,
        *("backlog", "--count", str(backlog), "--seconds", str(BACKLOG_TASK_SECONDS)),
        name="backlog",
        timeout=cfg.step_timeout(backlog),
    )
    schedule = taskhub.child(ctx, database, "schedule", name="schedule")["schedule"]
    env = ctx.taskhub_env(database)
    workers = [
        ctx.children.spawn(python("manage.py", "run_worker"), env=env, name=f"sched-worker{i}") for i in range(WORKERS)
    ]
    try:
        time.sleep(seconds)
        if any(worker.poll() is not None for worker in workers):
            raise StepFailed("a worker exited during the lateness window")
    finally:
        result = taskhub.child(ctx, database, "lateness", "--schedule", str(schedule), name="lateness")
        for worker in workers:
            ctx.children.stop(worker)
    summary = lateness_summary(result["lateness"], fires=result["fires"], seconds=seconds)
    summary["backlog"] = backlog
    summary["workers"] = WORKERS
    summary["values"] = [round(value, 4) for value in result["lateness"]]
    return summary
