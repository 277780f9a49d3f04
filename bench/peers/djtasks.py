"""django-tasks-db peer: `.enqueue()` per task, drained by `db_worker --batch` in 1 and 2 processes."""

from __future__ import annotations

from bench import db
from bench.context import Context
from bench.procs import StepFailed, python, workers_label
from bench.stats import rate

DATABASE = "bench_djtasks"
TABLE = "django_tasks_database_dbtaskresult"  # app label django_tasks_database
CHILD = "bench.peers.djtasks_child"
# Exits once the queue is empty (--batch), no reloader, no random start delay, no idle sleep.
WORKER_ARGS = ("db_worker", "--batch", "--no-reload", "--no-startup-delay", "--interval", "0", "--verbosity", "0")


def peer_env(ctx: Context) -> dict[str, str]:
    """Return the environment of the peer's processes (its own settings, database `bench_djtasks`)."""
    env = ctx.mysql_env()
    env.update(DJANGO_SETTINGS_MODULE="bench.peers.djtasks_settings", BENCH_DJTASKS_DATABASE=DATABASE)
    return env


def run(ctx: Context) -> dict:
    """Measure django-tasks-db enqueue and drain rates; return the raw runs."""
    cfg, env = ctx.cfg, peer_env(ctx)
    ctx.own_database(DATABASE)
    ctx.children.run(python("-m", CHILD, "migrate"), env=env, name="djtasks-migrate", timeout=300)
    runs = []
    for rep, workers in ctx.rounds("django-tasks-db", (1, 2)):
        db.truncate(cfg, DATABASE, [TABLE])
        enq = ctx.children.run(
            python("-m", CHILD, "enqueue", str(cfg.tasks)),
            env=env,
            name="djtasks-enqueue",
            timeout=cfg.step_timeout(cfg.tasks),
        )
        ctx.children.run_workers(
            python("-m", "django", *WORKER_ARGS),
            env=env,
            count=workers,
            name="djtasks-worker",
            timeout=cfg.step_timeout(cfg.tasks),
        )
        done = db.span(cfg, DATABASE, TABLE, "status = %s", ["SUCCESSFUL"])
        if done["finished"] != cfg.tasks:
            counts = db.status_counts(cfg, DATABASE, TABLE)
            raise StepFailed(f"django-tasks-db finished {done['finished']} of {cfg.tasks} tasks: {counts}")
        runs.append(
            {
                "label": workers_label(workers),
                "workers": workers,
                "rep": rep,
                "enqueue_rate": rate(enq["count"], enq["seconds"]),
                "drain_rate": rate(done["finished"], done["seconds"]),
                "drain_seconds": done["seconds"],
            }
        )
    return {"runs": runs}
