"""TaskHub on a bench database: prepare it, fill it, drain it with `run_worker --burst` workers."""

from __future__ import annotations

from bench import db, taskhub_side
from bench.context import Context
from bench.procs import StepFailed, python, workers_label
from bench.stats import rate

DATABASE = "bench_taskhub"
TASK_TABLES = (
    "task_queue",
    "task_status_count",
    "task_hourly_stats",
    "task_minute_stats",
    "task_hour_stats",
    "task_hour_stats_mark",
    "task_worker",
)
BENCH_USERS = 50


def child(
    ctx: Context, database: str, *args: str, name: str, timeout: float = 300, env: dict[str, str] | None = None
) -> dict:
    """Run `python -m bench.child ARGS` on `database` (with `env` added) and return its result."""
    return ctx.children.run(
        python("-m", "bench.child", *args), env=ctx.taskhub_env(database, **(env or {})), name=name, timeout=timeout
    )


def prepare(ctx: Context, database: str, *, fresh: bool = True) -> None:
    """Create (or keep) `database`, migrate it and make sure the bench users exist."""
    if fresh:
        ctx.own_database(database)
    else:
        ctx.adopt_database(database)
    ctx.log(f"migrating {database}")
    ctx.children.run(
        python("manage.py", "migrate", "--noinput", "--verbosity", "0"),
        env=ctx.taskhub_env(database),
        name=f"migrate-{database}",
        timeout=600,
    )
    child(ctx, database, "users", "--count", str(BENCH_USERS), name="users")


def shared_database(ctx: Context) -> str:
    """Return the run's TaskHub database for throughput, auth and memory, prepared once."""
    if "taskhub_db" not in ctx.memo:
        prepare(ctx, DATABASE)
        ctx.memo["taskhub_db"] = DATABASE
    return ctx.memo["taskhub_db"]


def reset(ctx: Context, database: str) -> None:
    """Empty the task tables and counters of `database` (users and queues stay)."""
    db.truncate(ctx.cfg, database, TASK_TABLES)


def drain(
    ctx: Context, database: str, *, workers: int, expected: int, first_id: int = 1, env: dict[str, str] | None = None
) -> dict:
    """Run `workers` burst workers (with `env` added) until they exit; return the count and span from DB timestamps."""
    ctx.children.run_workers(
        python(*taskhub_side.worker_args()),
        env=ctx.taskhub_env(database, **(env or {})),
        count=workers,
        name="run_worker",
        timeout=ctx.cfg.step_timeout(expected),
    )
    done = db.span(ctx.cfg, database, "task_queue", "id >= %s AND status = 'succeeded'", [first_id])
    if done["finished"] != expected:
        counts = db.status_counts(ctx.cfg, database, "task_queue", "id >= %s", [first_id])
        raise StepFailed(f"TaskHub workers succeeded {done['finished']} of {expected} tasks: {counts}")
    return {"count": done["finished"], "seconds": done["seconds"], "rate": rate(done["finished"], done["seconds"])}


# A reference drain: 2 workers with the claim batch the product had before its default went to 50.
REFERENCE_BATCH = 20
REFERENCE_LABEL = f"2 workers, claim batch {REFERENCE_BATCH}"


def run_throughput(ctx: Context) -> dict:
    """Enqueue per task (1 worker drains) and in bulk (2 workers drain; and with the reference batch), `repeats` times."""
    cfg = ctx.cfg
    database = shared_database(ctx)
    runs = []
    for rep in range(cfg.repeats):
        bulk_drains = [(2, "bulk", None), (2, "bulk", REFERENCE_BATCH)]
        if rep % 2:  # the reference goes first every other round: no order favours either
            bulk_drains.reverse()
        for workers, mode, batch in [(1, "per-task", None), *bulk_drains]:
            ctx.require_time(cfg.step_estimate(cfg.tasks), "TaskHub throughput")
            ctx.log(f"taskhub: rep {rep + 1}, enqueue {mode}, {workers} worker(s), {cfg.tasks} tasks")
            reset(ctx, database)
            enq = child(
                ctx,
                database,
                *("enqueue", "--mode", mode, "--count", str(cfg.tasks), "--chunk", str(cfg.bulk_chunk)),
                name=f"enqueue-{mode}",
                timeout=cfg.step_timeout(cfg.tasks),
            )
            env = {"TASKHUB_CLAIM_BATCH_SIZE": str(batch)} if batch else None
            done = drain(ctx, database, workers=workers, expected=cfg.tasks, env=env)
            runs.append(
                {
                    "rep": rep,
                    "workers": workers,
                    "label": REFERENCE_LABEL if batch else workers_label(workers),
                    "enqueue_label": mode,
                    "enqueue_rate": rate(enq["count"], enq["seconds"]),
                    "drain_rate": done["rate"],
                    "drain_seconds": done["seconds"],
                }
            )
    return {"runs": runs}
