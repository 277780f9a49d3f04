"""TaskHub on a bench database: prepare it, fill it, drain it with `run_worker --burst` workers."""

from __future__ import annotations

from bench import db, taskhub_side
from bench.context import Context, Unavailable
from bench.procs import StepFailed, python, workers_label
from bench.stats import rate

DATABASE = "bench_taskhub"
TASK_TABLES = ("task_queue", "task_status_count", "task_hourly_stats", "task_worker")
BENCH_USERS = 50


def child(ctx: Context, database: str, *args: str, name: str, timeout: float = 300) -> dict:
    """Run `python -m bench.child ARGS` on `database` and return its result."""
    return ctx.children.run(
        python("-m", "bench.child", *args), env=ctx.taskhub_env(database), name=name, timeout=timeout
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


def probe(ctx: Context) -> dict[str, str | None]:
    """Return which TaskHub interfaces exist (None) or why not, probed once per run."""
    if "probe" not in ctx.memo:
        database = shared_database(ctx)
        ctx.memo["probe"] = child(
            ctx, database, "probe", "--liveness", ctx.cfg.liveness_path, "--auth", ctx.cfg.auth_path, name="probe"
        )
    return ctx.memo["probe"]


def missing(found: dict[str, str | None], *features: str) -> str | None:
    """Return why any of `features` is unavailable ("; "-joined), or None if all are there."""
    reasons = [found[f] for f in features if found.get(f)]
    return "; ".join(reasons) or None


def reset(ctx: Context, database: str) -> None:
    """Empty the task tables and counters of `database` (users and queues stay)."""
    db.truncate(ctx.cfg, database, TASK_TABLES)


def drain(ctx: Context, database: str, *, workers: int, expected: int, first_id: int = 1) -> dict:
    """Run `workers` burst workers until they exit; return the count and span from DB timestamps."""
    ctx.children.run_workers(
        python(*taskhub_side.worker_args()),
        env=ctx.taskhub_env(database),
        count=workers,
        name="run_worker",
        timeout=ctx.cfg.step_timeout(expected),
    )
    done = db.span(ctx.cfg, database, "task_queue", "id >= %s AND status = 'succeeded'", [first_id])
    if done["finished"] != expected:
        counts = db.status_counts(ctx.cfg, database, "task_queue", "id >= %s", [first_id])
        raise StepFailed(f"TaskHub workers succeeded {done['finished']} of {expected} tasks: {counts}")
    return {"count": done["finished"], "seconds": done["seconds"], "rate": rate(done["finished"], done["seconds"])}


def run_throughput(ctx: Context) -> dict:
    """Enqueue per task (1 worker drains) and in bulk (2 workers drain), `repeats` times."""
    cfg = ctx.cfg
    found = probe(ctx)
    no_worker = missing(found, "run_worker")
    no_enqueue = {"per-task": missing(found, "task_enqueue"), "bulk": missing(found, "tasks_enqueue_bulk")}
    if no_worker and all(no_enqueue.values()):
        raise Unavailable(f"{no_worker}; {'; '.join(no_enqueue.values())}")
    database = shared_database(ctx)
    unavailable = {k: v for k, v in {"drain": no_worker, **no_enqueue}.items() if v}
    runs = []
    for rep in range(cfg.repeats):
        for workers, mode in ((1, "per-task"), (2, "bulk")):
            ctx.require_time(cfg.step_estimate(cfg.tasks), "TaskHub throughput")
            ctx.log(f"taskhub: rep {rep + 1}, enqueue {mode}, {workers} worker(s), {cfg.tasks} tasks")
            reset(ctx, database)
            run: dict = {"rep": rep, "workers": workers}
            if not no_enqueue[mode]:
                enq = child(
                    ctx,
                    database,
                    *("enqueue", "--mode", mode, "--count", str(cfg.tasks), "--chunk", str(cfg.bulk_chunk)),
                    name=f"enqueue-{mode}",
                    timeout=cfg.step_timeout(cfg.tasks),
                )
                run.update(enqueue_label=mode, enqueue_rate=rate(enq["count"], enq["seconds"]))
            elif not no_worker:
                # No service to measure: fill the queue with the loader so the drain still runs.
                child(ctx, database, "pending", "--rows", str(cfg.tasks), name="pending")
            if not no_worker:
                done = drain(ctx, database, workers=workers, expected=cfg.tasks)
                run.update(label=workers_label(workers), drain_rate=done["rate"])
                run["drain_seconds"] = done["seconds"]
            runs.append(run)
    return {"runs": runs, "unavailable": unavailable}
