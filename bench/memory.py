"""Worker memory: RSS of one `run_worker --burst` process sampled while it drains many echo tasks."""

from __future__ import annotations

import time

import psutil

from bench import db, taskhub
from bench.context import Context
from bench.procs import StepFailed, python
from bench.taskhub_side import worker_args

SAMPLE_SECONDS = 0.5
MAX_SAMPLES_KEPT = 200


def _rss(proc: psutil.Process) -> int:
    """Return the resident memory of the worker and any children it forked."""
    total = proc.memory_info().rss
    for kid in proc.children(recursive=True):
        try:
            total += kid.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def growth(samples: list[tuple[float, int, int]], warmup: int, total: int) -> dict:
    """Return RSS after `warmup` tasks, at the end, the peak and the growth in % from (t, done, rss) samples.

    The end is the last sample taken while tasks were still running: once all `total` are done
    the worker stops its child processes, and the shrinking RSS would hide any growth.
    """
    warm = next((s for s in samples if s[1] >= warmup), None)
    if warm is None or not samples:
        return {"error": f"no sample after {warmup} tasks"}
    end = next((s for s in reversed(samples) if s[1] < total and s[0] >= warm[0]), samples[-1])
    return {
        "warm_tasks": warm[1],
        "warm_rss_mb": warm[2] / 2**20,
        "end_tasks": end[1],
        "end_rss_mb": end[2] / 2**20,
        "peak_rss_mb": max(s[2] for s in samples) / 2**20,
        "growth_pct": (end[2] - warm[2]) / warm[2] * 100,
    }


def run(ctx: Context) -> dict:
    """Fill the queue with BENCH_MEMORY_TASKS echo tasks and sample one worker draining them."""
    cfg = ctx.cfg
    database = taskhub.shared_database(ctx)
    ctx.require_time(cfg.step_estimate(cfg.memory_tasks), "worker memory")
    taskhub.reset(ctx, database)
    ctx.log(f"memory: filling {cfg.memory_tasks} tasks")
    taskhub.child(ctx, database, "pending", "--rows", str(cfg.memory_tasks), name="pending", timeout=900)
    proc = ctx.children.spawn(python(*worker_args()), env=ctx.taskhub_env(database), name="memory-worker")
    watched = psutil.Process(proc.pid)
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    # Bounded by the step's own limit and by what is left of the run's budget.
    deadline = started + min(cfg.step_timeout(cfg.memory_tasks), max(ctx.remaining(), 60.0))
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                rss = _rss(watched)
            except psutil.NoSuchProcess:
                break
            done = db.query(cfg, database, "SELECT COUNT(*) FROM task_queue WHERE finished_at IS NOT NULL")[0][0]
            samples.append((time.monotonic() - started, int(done), rss))
            time.sleep(SAMPLE_SECONDS)
    finally:
        ctx.children.stop(proc)
    done = db.query(cfg, database, "SELECT COUNT(*) FROM task_queue WHERE finished_at IS NOT NULL")[0][0]
    if done < cfg.memory_tasks:
        raise StepFailed(f"the worker finished {done} of {cfg.memory_tasks} tasks (exit {proc.returncode})")
    step = max(1, len(samples) // MAX_SAMPLES_KEPT)
    return {
        "tasks": cfg.memory_tasks,
        "warmup": cfg.memory_warmup,
        **growth(samples, cfg.memory_warmup, cfg.memory_tasks),
        "samples": [{"t": t, "done": d, "rss": r} for t, d, r in samples[::step]],
    }
