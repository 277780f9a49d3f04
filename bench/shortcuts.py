"""Shortcuts A/B (`shortcuts`): each shortcut's own measure with every shortcut on, and with that one off.

TaskHub takes a few shortcuts into library internals on its hot paths (core/shortcuts.py); one
stays only while it buys at least KEEP_GAIN_PCT on the measure of the path it sits on. Every
variant is a set of TaskHub processes started with its own `TASKHUB_SHORTCUTS`: `all`, or all but
one. The variants of a measure are measured in the same run, round after round in turn (each
round starting with another variant), so noise that comes in bursts hits them alike; the report
pairs each variant with `all` round by round.
"""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial

from bench import httpload, taskhub
from bench.config import USER_NAME
from bench.context import Context, Unavailable
from bench.procs import StepFailed
from core.shortcuts import SHORTCUTS

AUTH = "auth"
ENQUEUE = "enqueue"
BULK = "bulk"
DRAIN = "drain"
# The measures, in the order they run and are reported.
MEASURES = (AUTH, ENQUEUE, BULK, DRAIN)
# What each shortcut is judged on: the measures of the paths it sits on.
JUDGED_ON: dict[str, tuple[str, ...]] = {
    "user_lookup": (AUTH,),
    "raw_task_sql": (ENQUEUE, BULK, DRAIN),
}
ALL = "all"
KEEP_GAIN_PCT = 10.0
DRAIN_WORKERS = 2
WARMUP_SECONDS = 2.0


def variants(measure: str) -> list[str]:
    """Return the variants measured for `measure`: `all`, then each shortcut judged on it (that one off)."""
    return [ALL, *(name for name, measures in JUDGED_ON.items() if measure in measures)]


def in_turn(names: list[str], rep: int) -> list[str]:
    """Return `names` rotated by `rep`: each round starts with another variant, so no variant always goes first."""
    shift = rep % len(names)
    return names[shift:] + names[:shift]


def shortcuts_env(variant: str) -> dict[str, str]:
    """Return the environment that gives a TaskHub process the shortcuts of `variant`."""
    if variant == ALL:
        return {"TASKHUB_SHORTCUTS": "all"}
    return {"TASKHUB_SHORTCUTS": ",".join(name for name in SHORTCUTS if name != variant) or "none"}


def run(ctx: Context) -> dict:
    """Measure every variant of every measure; return the rates per variant, round by round."""
    if set(JUDGED_ON) != set(SHORTCUTS):
        raise StepFailed(f"the harness judges {sorted(JUDGED_ON)}, TaskHub has {sorted(SHORTCUTS)}")
    database = taskhub.shared_database(ctx)
    measured = {}
    steps = ((AUTH, _auth), (ENQUEUE, partial(_enqueue, mode="per-task")), (BULK, partial(_enqueue, mode="bulk")))
    for measure, func in (*steps, (DRAIN, _drain)):
        try:
            measured[measure] = func(ctx, database)
        except Unavailable as exc:
            ctx.log(f"shortcuts {measure}: {exc}")
            measured[measure] = {"unavailable": str(exc)}
        except StepFailed as exc:
            ctx.log(f"shortcuts {measure} failed: {exc}")
            measured[measure] = {"error": str(exc)}
    return {
        "measures": measured,
        "judged_on": {name: list(measures) for name, measures in JUDGED_ON.items()},
        "keep_gain_pct": KEEP_GAIN_PCT,
        "auth_path": ctx.cfg.auth_path,
        "tasks": ctx.cfg.tasks,
        "drain_workers": DRAIN_WORKERS,
        "bulk_chunk": ctx.cfg.bulk_chunk,
    }


def _auth(ctx: Context, database: str) -> dict:
    """Requests/s of the authenticated endpoint, one gunicorn per variant, loaded in turn each round."""
    cfg = ctx.cfg
    names = variants(AUTH)
    ctx.require_time(len(names) * (WARMUP_SECONDS + cfg.repeats * cfg.load_seconds) + 60, "shortcuts auth A/B")
    ctx.log(f"shortcuts: {cfg.auth_path} under {len(names)} variants, {cfg.repeats} × {cfg.load_seconds:.0f}s each")
    rates: dict[str, list[float]] = {name: [] for name in names}
    non_2xx = dict.fromkeys(names, 0)
    tool = ""
    with ExitStack() as servers:
        ports = {name: servers.enter_context(httpload.gunicorn(ctx, database, **shortcuts_env(name))) for name in names}
        token = httpload.obtain_token(ports[ALL], USER_NAME.format(0), ctx.password)
        for name, port in ports.items():
            status, body = httpload.request(port, "GET", cfg.auth_path, token=token)
            if status != 200:
                raise StepFailed(f"GET {cfg.auth_path} ({name} off) answered {status}: {body[:200]!r}")
            httpload.load(port, cfg.auth_path, token=token, seconds=WARMUP_SECONDS, connections=cfg.load_connections)
        for rep in range(cfg.repeats):
            for name in in_turn(names, rep):
                port = ports[name]
                load = httpload.load_spread(
                    port,
                    cfg.auth_path,
                    token=token,
                    seconds=cfg.load_seconds,
                    connections=cfg.load_connections,
                    workers=cfg.gunicorn_workers,
                )
                rates[name].append(load["rps"])
                non_2xx[name] += load["non_2xx"]
                tool = load["tool"]
    return {"unit": "requests/s", "rates": rates, "non_2xx": non_2xx, "tool": tool}


def _enqueue(ctx: Context, database: str, *, mode: str) -> dict:
    """Tasks/s of `task_enqueue` called once per task (`per-task`) or `tasks_enqueue_bulk` (`bulk`), each variant in turn each round."""
    cfg = ctx.cfg
    names = variants(ENQUEUE if mode == "per-task" else BULK)
    chunk = ("--chunk", str(cfg.bulk_chunk)) if mode == "bulk" else ()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(cfg.repeats):
        for name in in_turn(names, rep):
            ctx.require_time(cfg.step_estimate(cfg.tasks), f"shortcuts {mode} enqueue A/B")
            ctx.log(f"shortcuts: enqueue {mode}, rep {rep + 1}, {_label(name)}, {cfg.tasks} tasks")
            taskhub.reset(ctx, database)
            done = taskhub.child(
                ctx,
                database,
                *("enqueue", "--mode", mode, "--count", str(cfg.tasks), *chunk),
                name=f"enqueue-{name}",
                timeout=cfg.step_timeout(cfg.tasks),
                env=shortcuts_env(name),
            )
            rates[name].append(done["count"] / done["seconds"])
    return {"unit": "tasks/s", "rates": rates}


def _drain(ctx: Context, database: str) -> dict:
    """Tasks/s of two burst workers draining no-op tasks (filled in bulk), each variant in turn each round."""
    cfg = ctx.cfg
    names = variants(DRAIN)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(cfg.repeats):
        for name in in_turn(names, rep):
            ctx.require_time(2 * cfg.step_estimate(cfg.tasks), "shortcuts drain A/B")
            ctx.log(f"shortcuts: drain, rep {rep + 1}, {_label(name)}, {DRAIN_WORKERS} workers, {cfg.tasks} tasks")
            taskhub.reset(ctx, database)
            taskhub.child(
                ctx,
                database,
                *("enqueue", "--mode", "bulk", "--count", str(cfg.tasks), "--chunk", str(cfg.bulk_chunk)),
                name="fill",
                timeout=cfg.step_timeout(cfg.tasks),
            )
            done = taskhub.drain(ctx, database, workers=DRAIN_WORKERS, expected=cfg.tasks, env=shortcuts_env(name))
            if done["rate"] is None:
                raise StepFailed(f"the drain with {_label(name)} has no measurable span")
            rates[name].append(done["rate"])
    return {"unit": "tasks/s", "rates": rates}


def _label(variant: str) -> str:
    return "all shortcuts" if variant == ALL else f"all but {variant}"
