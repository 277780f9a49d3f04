"""The console under load (`console`): a bulk retry of many failed tasks while 2 workers drain another queue.

Round after round, on one database: the drain alone, then the same drain while `run_bulk_actions`
retries BULK_TASKS failed tasks of one failure group in its batches of 1,000 (the console's
"Retry all"). The retried tasks go back to pending in a queue of their own that the workers do
not serve, so what is measured is what the bulk action's transactions cost the claims beside
them. The drain starts once the action has changed its first batch, and the round says whether
the action was still running when the drain ended. Target: the drain rate with the bulk action
≥ 0.7 × the rate alone (medians of the rounds).
"""

from __future__ import annotations

import time

from bench import db, taskhub, taskhub_side
from bench.context import Context
from bench.procs import StepFailed, python
from bench.stats import rate, ratio, summarize

DATABASE = "bench_console"
BULK_QUEUE = "bulk"
DRAIN_QUEUE = "default"
BULK_TASKS, BULK_TASKS_QUICK = 100_000, 10_000
TARGET_RATIO = 0.7
TABLES = (*taskhub.TASK_TABLES, "task_minute_stats", "task_failure_group", "task_bulk_action")
START_TIMEOUT = 60.0  # seconds for the runner's first batch to commit
FINISH_TIMEOUT = 600.0  # seconds for the whole bulk action


def run(ctx: Context) -> dict:
    """Alternate the drain alone and beside the bulk retry, `repeats` rounds; return both and their ratio."""
    cfg = ctx.cfg
    bulk_tasks = BULK_TASKS_QUICK if cfg.quick else BULK_TASKS
    drain_tasks = cfg.tasks * 4  # long enough to lie inside the bulk action, short enough to repeat
    ctx.require_time(cfg.repeats * (60 + bulk_tasks / 2000 + 2 * cfg.step_estimate(drain_tasks)), "console")
    taskhub.prepare(ctx, DATABASE)
    rounds = []
    for rep in range(cfg.repeats):
        ctx.log(f"console: round {rep + 1}: {drain_tasks} tasks drained by 2 workers, alone")
        alone = _drain_alone(ctx, drain_tasks)
        ctx.log(f"console: round {rep + 1}: the same drain beside a bulk retry of {bulk_tasks} failed tasks")
        beside = _drain_beside_bulk_retry(ctx, drain_tasks, bulk_tasks)
        rounds.append({"rep": rep, "alone": alone, "beside": beside})
    db.drop_database(cfg, DATABASE)
    alone_rates = [r["alone"]["rate"] for r in rounds]
    beside_rates = [r["beside"]["rate"] for r in rounds]
    alone_summary, beside_summary = summarize(alone_rates), summarize(beside_rates)
    return {
        "drain_tasks": drain_tasks,
        "bulk_tasks": bulk_tasks,
        "rounds": rounds,
        "alone": alone_summary,
        "beside": beside_summary,
        "ratio": ratio(beside_summary["median"], alone_summary["median"]),
        "target_ratio": TARGET_RATIO,
    }


def _reset(ctx: Context) -> None:
    db.truncate(ctx.cfg, DATABASE, TABLES)


def _enqueue(ctx: Context, count: int) -> None:
    taskhub.child(
        ctx,
        DATABASE,
        *("enqueue", "--mode", "bulk", "--count", str(count), "--chunk", str(ctx.cfg.bulk_chunk)),
        name="console-enqueue",
        timeout=ctx.cfg.step_timeout(count),
    )


def _drain(ctx: Context, count: int) -> dict:
    """Drain the drain queue with 2 burst workers serving it alone; return its count, span and rate."""
    ctx.children.run_workers(
        python(*taskhub_side.worker_args("--queue", DRAIN_QUEUE)),
        env=ctx.taskhub_env(DATABASE),
        count=2,
        name="console-worker",
        timeout=ctx.cfg.step_timeout(count),
    )
    where = "status = 'succeeded' AND queue_id = (SELECT id FROM queue_config WHERE name = %s)"
    done = db.span(ctx.cfg, DATABASE, "task_queue", where, [DRAIN_QUEUE])
    if done["finished"] != count:
        raise StepFailed(f"the console drain finished {done['finished']} of {count} tasks")
    return {"count": count, "seconds": done["seconds"], "rate": rate(count, done["seconds"])}


def _drain_alone(ctx: Context, count: int) -> dict:
    _reset(ctx)
    _enqueue(ctx, count)
    return _drain(ctx, count)


def _drain_beside_bulk_retry(ctx: Context, count: int, bulk_tasks: int) -> dict:
    """Drain while `run_bulk_actions` retries `bulk_tasks` failed tasks; add what the bulk action did meanwhile."""
    _reset(ctx)
    failed = taskhub.child(
        ctx, DATABASE, "failed", "--rows", str(bulk_tasks), "--queue", BULK_QUEUE, name="console-failed", timeout=900
    )
    _enqueue(ctx, count)
    action = taskhub.child(ctx, DATABASE, "bulk-retry", "--group", failed["failure_group"], name="console-retry")
    runner = ctx.children.spawn(
        python("manage.py", "run_bulk_actions", "--interval", "0.2"),
        env=ctx.taskhub_env(DATABASE),
        name="console-bulk-runner",
    )
    try:
        _wait_for(ctx, action["action"], "changed > 0", START_TIMEOUT, runner)
        drained = _drain(ctx, count)
        during = _action(ctx, action["action"])
        _wait_for(ctx, action["action"], "state = 'done'", FINISH_TIMEOUT, runner)
    finally:
        ctx.children.stop(runner)
    done = _action(ctx, action["action"])
    last_finish = db.query(ctx.cfg, DATABASE, "SELECT MAX(finished_at) FROM task_queue WHERE status = 'succeeded'")
    bulk_seconds = (done["finished_at"] - done["created_at"]).total_seconds()
    return {
        **drained,
        "bulk_changed": done["changed"],
        "bulk_changed_when_drained": during["changed"],
        "bulk_seconds": bulk_seconds,
        "bulk_rate": rate(done["changed"], bulk_seconds),
        "bulk_covered_drain": done["finished_at"] >= last_finish[0][0],
    }


def _action(ctx: Context, action_id: int) -> dict:
    rows = db.query(
        ctx.cfg,
        DATABASE,
        "SELECT state, changed, created_at, finished_at FROM task_bulk_action WHERE id = %s",
        [action_id],
    )
    state, changed, created_at, finished_at = rows[0]
    return {"state": state, "changed": int(changed), "created_at": created_at, "finished_at": finished_at}


def _wait_for(ctx: Context, action_id: int, condition: str, timeout: float, runner) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.query(ctx.cfg, DATABASE, f"SELECT 1 FROM task_bulk_action WHERE id = %s AND {condition}", [action_id]):
            return
        if runner.poll() is not None:
            raise StepFailed(f"run_bulk_actions exited ({runner.returncode}) before bulk action {condition}")
        time.sleep(0.05)
    raise StepFailed(f"bulk action #{action_id}: not {condition} within {timeout:.0f}s")
