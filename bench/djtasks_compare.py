"""Django tasks on TaskHub vs django-tasks-db, on the same `@task` code (section `djtasks`).

The task is `bench.peers.djtasks_tasks.noop`, one function under Django's `@task`: with TaskHub's
settings it binds to TaskHubBackend, with the peer's to django-tasks-db's DatabaseBackend. Each
repetition enqueues N tasks with `.enqueue()` one call each (timed: the enqueue rate), then two
workers drain them — two `run_worker --burst` for TaskHub, two `db_worker --batch` for the peer.
"""

from __future__ import annotations

from bench import db, taskhub
from bench.context import Context
from bench.peers import djtasks
from bench.procs import StepFailed, python
from bench.stats import rate

WORKERS = 2
LABEL = "2 workers"


def run(ctx: Context) -> dict:
    """Measure `.enqueue()` per task and the 2-worker drain on both backends; return the raw runs."""
    cfg = ctx.cfg
    database = taskhub.shared_database(ctx)
    peer_env = djtasks.peer_env(ctx)
    ctx.own_database(djtasks.DATABASE)
    ctx.children.run(python("-m", djtasks.CHILD, "migrate"), env=peer_env, name="djtasks-migrate", timeout=300)
    ours, theirs = [], []
    for rep in range(cfg.repeats):
        ctx.require_time(2 * cfg.step_estimate(cfg.tasks), "Django tasks comparison")
        ctx.log(f"djtasks: rep {rep + 1}, {cfg.tasks} @task no-ops, TaskHubBackend")
        taskhub.reset(ctx, database)
        enq = taskhub.child(
            ctx, database, "enqueue-django", "--count", str(cfg.tasks), name="enqueue-django",
            timeout=cfg.step_timeout(cfg.tasks),
        )  # fmt: skip
        done = taskhub.drain(ctx, database, workers=WORKERS, expected=cfg.tasks)
        ours.append(_run(rep, enq, done["rate"], done["seconds"]))

        ctx.log(f"djtasks: rep {rep + 1}, {cfg.tasks} @task no-ops, django-tasks-db")
        db.truncate(cfg, djtasks.DATABASE, [djtasks.TABLE])
        enq = ctx.children.run(
            python("-m", djtasks.CHILD, "enqueue", str(cfg.tasks)), env=peer_env, name="djtasks-enqueue",
            timeout=cfg.step_timeout(cfg.tasks),
        )  # fmt: skip
        ctx.children.run_workers(
            python("-m", "django", *djtasks.WORKER_ARGS), env=peer_env, count=WORKERS, name="djtasks-worker",
            timeout=cfg.step_timeout(cfg.tasks),
        )  # fmt: skip
        span = db.span(cfg, djtasks.DATABASE, djtasks.TABLE, "status = %s", ["SUCCESSFUL"])
        if span["finished"] != cfg.tasks:
            counts = db.status_counts(cfg, djtasks.DATABASE, djtasks.TABLE)
            raise StepFailed(f"django-tasks-db finished {span['finished']} of {cfg.tasks} tasks: {counts}")
        theirs.append(_run(rep, enq, rate(span["finished"], span["seconds"]), span["seconds"]))
    return {"taskhub": {"runs": ours}, "django-tasks-db": {"runs": theirs}}


def _run(rep: int, enq: dict, drain_rate: float | None, drain_seconds: float | None) -> dict:
    return {
        "rep": rep,
        "workers": WORKERS,
        "label": LABEL,
        "enqueue_label": "per task",
        "enqueue_rate": rate(enq["count"], enq["seconds"]),
        "drain_rate": drain_rate,
        "drain_seconds": drain_seconds,
    }
