"""Fair scheduling between users (`fairness`): a small user's wait behind a big backlog, and the fair drain rate.

1. Wait: user A (bench_user_00) enqueues a backlog; one `run_worker --concurrency 2` (claim
   batches of CLAIM_BATCH) gets going on it; then user B (bench_user_01) enqueues 10 tasks. For
   each of B's tasks: the tasks started after B's enqueue and before it (in claim batches: at most
   2 is the target with `fairness=owner`), and its wait in ms. Reported as the p100 over B's tasks,
   with `fairness=owner` and, for contrast, `none`.
2. Drain: `tasks` echo tasks spread over 100 owners, drained by 2 burst workers with
   `fairness=owner` and with `none`, in turn each round. Target: owner ≥ 0.8 × none.
"""

from __future__ import annotations

import time

from bench import taskhub
from bench.context import Context
from bench.procs import StepFailed, python
from bench.shortcuts import in_turn
from bench.stats import median_of, ratio, summarize

MODES = ("owner", "none")
BACKLOG = 20_000
BACKLOG_QUICK = 3_000
SMALL_USER_TASKS = 10
CLAIM_BATCH = 20
WARMUP_SECONDS = 3.0
DRAIN_OWNERS = 100
DRAIN_WORKERS = 2
TARGET_BATCHES = 2
TARGET_DRAIN_RATIO = 0.8


def run(ctx: Context) -> dict:
    """Measure both; a failure of one leaves the other's figures."""
    database = taskhub.shared_database(ctx)
    taskhub.child(ctx, database, "users", "--count", str(DRAIN_OWNERS), name="users")
    measured: dict = {}
    for name, func in (("wait", _waits), ("drain", _drain)):
        try:
            measured[name] = func(ctx, database)
        except StepFailed as exc:
            ctx.log(f"fairness {name} failed: {exc}")
            measured[name] = {"error": str(exc)}
    taskhub.child(ctx, database, "fair-queue", "--fairness", "none", name="fair-queue-none")
    return measured


def wait_summary(waits: list[dict], *, expected: int) -> dict:
    """Return the p100 of B's waits (tasks started before each, and ms) and whether all of B's tasks started."""
    if not waits:
        return {"started": 0, "expected": expected, "p100_tasks_before": None, "p100_ms": None}
    before = max(w["tasks_before"] for w in waits)
    return {
        "started": len(waits),
        "expected": expected,
        "p100_tasks_before": before,
        "p100_batches": before / CLAIM_BATCH,
        "p100_ms": max(w["ms"] for w in waits),
    }


def drain_ratio(rates: dict[str, list[float]]) -> float | None:
    """Return the median drain rate with fairness=owner ÷ the median with none."""
    return ratio(median_of(summarize(rates.get("owner", []))), median_of(summarize(rates.get("none", []))))


def _waits(ctx: Context, database: str) -> dict:
    cfg = ctx.cfg
    backlog = BACKLOG_QUICK if cfg.quick else BACKLOG
    by_mode = {}
    for mode in MODES:
        ctx.require_time(cfg.step_estimate(backlog) + 60, f"fairness wait ({mode})")
        ctx.log(f"fairness: fairness={mode}, {backlog} tasks of user A, then {SMALL_USER_TASKS} of user B")
        taskhub.reset(ctx, database)
        taskhub.child(ctx, database, "fair-queue", "--fairness", mode, name=f"fair-queue-{mode}")
        taskhub.child(
            ctx, database, *("fair-enqueue", "--owners", "1", "--count", str(backlog)), name="fair-backlog", timeout=600
        )
        env = ctx.taskhub_env(database, TASKHUB_CLAIM_BATCH_SIZE=str(CLAIM_BATCH))
        worker = ctx.children.spawn(
            python("manage.py", "run_worker", "--concurrency", "2"), env=env, name=f"fair-worker-{mode}"
        )
        try:
            time.sleep(WARMUP_SECONDS)
            small = taskhub.child(
                ctx,
                database,
                *("fair-enqueue", "--owners", "1", "--first-user", "1", "--count", str(SMALL_USER_TASKS)),
                name="fair-small",
            )
            timeout = cfg.step_timeout(backlog)
            found = taskhub.child(
                ctx,
                database,
                *("fair-waits", "--first-id", str(small["first_id"]), "--timeout", str(timeout)),
                name=f"fair-waits-{mode}",
                timeout=timeout + 60,
            )
        finally:
            ctx.children.stop(worker)
        by_mode[mode] = {**wait_summary(found["waits"], expected=SMALL_USER_TASKS), "backlog": backlog}
    return {"modes": by_mode, "claim_batch": CLAIM_BATCH, "target_batches": TARGET_BATCHES}


def _drain(ctx: Context, database: str) -> dict:
    cfg = ctx.cfg
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    for rep in range(cfg.repeats):
        for mode in in_turn(list(MODES), rep):
            ctx.require_time(cfg.step_estimate(cfg.tasks), "fairness drain")
            ctx.log(f"fairness: drain, rep {rep + 1}, fairness={mode}, {cfg.tasks} tasks of {DRAIN_OWNERS} owners")
            taskhub.reset(ctx, database)
            taskhub.child(ctx, database, "fair-queue", "--fairness", mode, name=f"fair-queue-{mode}")
            enq = taskhub.child(
                ctx,
                database,
                *("fair-enqueue", "--owners", str(DRAIN_OWNERS), "--count", str(cfg.tasks)),
                name="fair-enqueue",
                timeout=cfg.step_timeout(cfg.tasks),
            )
            done = taskhub.drain(ctx, database, workers=DRAIN_WORKERS, expected=cfg.tasks, first_id=enq["first_id"])
            rates[mode].append(done["rate"])
    found = drain_ratio(rates)
    return {
        "unit": "tasks/s",
        "owners": DRAIN_OWNERS,
        "workers": DRAIN_WORKERS,
        "rates": rates,
        "ratio": found,
        "target_ratio": TARGET_DRAIN_RATIO,
        "meets_target": found is not None and found >= TARGET_DRAIN_RATIO,
    }
