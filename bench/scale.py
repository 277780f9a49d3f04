"""Statistics at scale: load task_queue to each size, then time the statistics endpoints and claiming."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from bench import db, httpload, taskhub
from bench.config import STAFF_NAME, USER_NAME
from bench.context import Context
from bench.procs import StepFailed
from bench.taskhub_side import QUEUE_STATUS_PATH, STATISTICS_ALL_PATH, STATISTICS_PATH

META_TABLE = "bench_meta"
# After the largest size is measured, its live set is grown to this share of the rows (the mix of
# the first full run's data set) and the endpoints measured again: what a big backlog costs.
BACKLOG_SHARE = 0.03
ENDPOINTS = {
    "statistics (own)": (STATISTICS_PATH, "user"),
    "statistics ?scope=all (staff)": (STATISTICS_ALL_PATH, "staff"),
    "queue-status": (QUEUE_STATUS_PATH, "user"),
}
# The operator console's JSON feeds (docs/CONSOLE.md), read by a staff session as the pages poll
# them. {group} is the biggest failure group of the data set, {owner} the first bench user.
CONSOLE = "/admin/taskhub/console"
CONSOLE_ENDPOINTS = {
    "console: queues": f"{CONSOLE}/queues/data/",
    "console: charts 1 h": f"{CONSOLE}/charts/data/?range=1h",
    "console: charts 24 h": f"{CONSOLE}/charts/data/?range=24h",
    "console: charts 7 d": f"{CONSOLE}/charts/data/?range=7d",
    "console: failure groups": f"{CONSOLE}/failures/data/",
    "console: a group's tasks": f"{CONSOLE}/failures/{{group}}/tasks/",
    "console: bulk actions": f"{CONSOLE}/bulk/data/",
    "console: workers": f"{CONSOLE}/workers/data/",
    "console: stuck": f"{CONSOLE}/stuck/data/",
    "console: schedules": f"{CONSOLE}/schedules/data/",
    "console: keys": f"{CONSOLE}/keys/data/",
    "console: search, pending": f"{CONSOLE}/tasks/data/?status=pending",
    "console: search, a group": f"{CONSOLE}/tasks/data/?failure_group={{group}}",
    "console: search, an owner's failed": f"{CONSOLE}/tasks/data/?owner={{owner}}&status=failed",
}


def size_label(rows: int) -> str:
    """Return 10k / 1M style labels for row counts."""
    if rows >= 1_000_000 and rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows >= 1000 and rows % 1000 == 0:
        return f"{rows // 1000}k"
    return str(rows)


def database_for(rows: int) -> str:
    """Return the bench database of one data-set size."""
    return f"bench_scale_{size_label(rows).lower()}"


def _loaded_rows(ctx: Context, database: str) -> int | None:
    """Return the size recorded by a completed earlier load of `database`, if any."""
    if not db.database_exists(ctx.cfg, database):
        return None
    tables = db.query(ctx.cfg, database, "SHOW TABLES LIKE %s", [META_TABLE])
    if not tables:
        return None
    rows = db.query(ctx.cfg, database, f"SELECT v FROM {META_TABLE} WHERE k = 'loaded_rows'")
    return int(rows[0][0]) if rows else None


def _mark_loaded(ctx: Context, database: str, rows: int) -> None:
    db.execute_all(
        ctx.cfg,
        database,
        [
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} (k VARCHAR(64) PRIMARY KEY, v TEXT NOT NULL)",
            f"REPLACE INTO {META_TABLE} (k, v) VALUES ('loaded_rows', '{int(rows)}')",
        ],
    )


def _dataset(ctx: Context, rows: int, *, keep: bool) -> tuple[str, dict]:
    """Return a database holding `rows` loaded tasks, reusing a kept one when allowed."""
    database = database_for(rows)
    if keep and _loaded_rows(ctx, database) == rows:
        ctx.log(f"scale: reusing the kept {size_label(rows)} data set in {database}")
        taskhub.prepare(ctx, database, fresh=False)
        return database, {"reused": True}
    taskhub.prepare(ctx, database)
    ctx.log(f"scale: loading {rows} rows into {database}")
    loaded = taskhub.child(
        ctx, database, "load", "--rows", str(rows), "--users", str(taskhub.BENCH_USERS), name="load", timeout=1800
    )
    _mark_loaded(ctx, database, rows)
    return database, {"reused": False, **loaded}


def _http(ctx: Context, database: str) -> dict:
    cfg = ctx.cfg
    results = {}
    with httpload.gunicorn(ctx, database) as port:
        tokens = {
            "user": httpload.obtain_token(port, USER_NAME.format(0), ctx.password),
            "staff": httpload.obtain_token(port, STAFF_NAME, ctx.password),
        }
        for name, (path, who) in ENDPOINTS.items():
            results[name] = httpload.latency(
                port, path, token=tokens[who], requests=cfg.http_requests, warmup=cfg.http_warmup
            )
    return results


def _console(ctx: Context, database: str) -> dict:
    """Time the console's JSON feeds with a staff session (a step of its own: its failure spares the statistics)."""
    cfg = ctx.cfg
    results = {}
    paths = console_paths(ctx, database)
    with httpload.gunicorn(ctx, database) as port:
        cookie = httpload.obtain_session(port, STAFF_NAME, ctx.password)
        for name, path in paths.items():
            results[name] = httpload.latency(
                port, path, token=None, cookie=cookie, requests=cfg.http_requests, warmup=cfg.http_warmup
            )
    return results


def console_paths(ctx: Context, database: str) -> dict[str, str]:
    """Return the console endpoints' paths for this data set (its biggest failure group, its first user)."""
    rows = db.query(ctx.cfg, database, "SELECT `key` FROM task_failure_group ORDER BY count DESC, `key` LIMIT 1")
    if not rows:
        raise StepFailed(f"{database} has no failure group: was it loaded by this version's loader?")
    values = {"group": rows[0][0], "owner": USER_NAME.format(0)}
    return {name: path.format(**values) for name, path in CONSOLE_ENDPOINTS.items()}


def _claim(ctx: Context, database: str) -> dict:
    """Drain `claim_tasks` fresh tasks added on top of the data set with one burst worker, `repeats` times.

    One drain lasts about a second, right after a large load (InnoDB still purging and flushing):
    a single one swung from 0.65 to 1.02 of the 10k rate between two runs of the same claim code.
    The rate is the median drain's. Each drain's tasks are deleted after it, so every repeat
    claims from a table of the size it is labelled with.
    """
    drains = []
    for _ in range(ctx.cfg.repeats):
        added = taskhub.child(ctx, database, "pending", "--rows", str(ctx.cfg.claim_tasks), name="pending")
        drains.append(taskhub.drain(ctx, database, workers=1, expected=added["count"], first_id=added["first_id"]))
        purge_drained(ctx, database, first_id=added["first_id"])
    median = sorted(drains, key=lambda drain: drain["rate"])[len(drains) // 2]
    return {**median, "rates": [drain["rate"] for drain in drains]}


def purge_drained(ctx: Context, database: str, *, first_id: int) -> int:
    """Delete the tasks a claim drain added (ids from `first_id` on); return how many rows remain."""
    db.query(ctx.cfg, database, "DELETE FROM task_queue WHERE id >= %s", [first_id])
    return db.query(ctx.cfg, database, "SELECT COUNT(*) FROM task_queue")[0][0]


def _live_tasks(ctx: Context, database: str) -> int:
    return db.query(ctx.cfg, database, "SELECT COUNT(*) FROM task_queue WHERE status IN ('pending', 'running')")[0][0]


def _backlog(ctx: Context, database: str, rows: int) -> dict:
    """Grow the live set to BACKLOG_SHARE of `rows`, then time the endpoints again."""
    live = _live_tasks(ctx, database)
    extra = int(rows * BACKLOG_SHARE) - live
    if extra <= 0:
        return {"skipped": f"the live set ({live}) is already {BACKLOG_SHARE:.0%} of the rows"}
    ctx.log(f"scale: adding {extra} live tasks to {database}")
    _mark_loaded(ctx, database, 0)  # no longer the data set a later run may reuse
    added = taskhub.child(ctx, database, "live", "--rows", str(extra), name="live", timeout=900)
    return {
        "live": added["live"],
        "http": _http(ctx, database),
        "console": _guard("console", partial(_console, ctx, database), ctx),
    }


def run(ctx: Context) -> dict:
    """Measure every size in BENCH_SCALE_SIZES; a failed part is reported for its size."""
    cfg = ctx.cfg
    largest = max(cfg.scale_sizes)
    sizes = []
    for rows in cfg.scale_sizes:
        ctx.require_time(120 + rows / 2000, f"scale {size_label(rows)}")
        keep = cfg.keep_dataset and rows == largest
        database, loaded = _dataset(ctx, rows, keep=keep)
        entry: dict = {"rows": rows, "label": size_label(rows), "load": loaded}
        entry["table_rows"] = db.query(cfg, database, "SELECT COUNT(*) FROM task_queue")[0][0]
        entry["live_tasks"] = _live_tasks(ctx, database)
        entry["http"] = _guard("http", partial(_http, ctx, database), ctx)
        entry["console"] = _guard("console", partial(_console, ctx, database), ctx)
        entry["claim"] = _guard("claim", partial(_claim, ctx, database), ctx)
        if rows == largest:
            entry["backlog"] = _guard("backlog", partial(_backlog, ctx, database, rows), ctx)
        if keep:
            ctx.kept_databases.add(database)
        else:
            db.drop_database(cfg, database)
        sizes.append(entry)
    return {"sizes": sizes}


def _guard(what: str, step: Callable[[], dict], ctx: Context) -> dict:
    """Run one measurement; a failure is recorded for this size and the next sizes still run."""
    try:
        return step()
    except Exception as exc:  # a benchmark reports failures; it never stops on them
        ctx.log(f"scale: {what} failed: {exc}")
        return {"error": str(exc)}
