"""Auth overhead: requests/s of an authenticated light endpoint vs the liveness endpoint."""

from __future__ import annotations

from bench import httpload, taskhub
from bench.config import USER_NAME
from bench.context import Context
from bench.procs import StepFailed
from bench.stats import ratio, summarize
from bench.taskhub_side import ONE_READ_PATH

WARMUP_SECONDS = 2.0


def run(ctx: Context) -> dict:
    """Load each endpoint in turn, `repeats` rounds, under gunicorn; return their rates and ratios.

    Besides the two endpoints of the target, a reference endpoint whose only work is one read
    (no authentication) shows what one database round trip per request costs by itself.
    """
    cfg = ctx.cfg
    database = taskhub.shared_database(ctx)
    ctx.log(f"auth: {cfg.auth_path} vs {cfg.liveness_path}, {cfg.repeats} × {cfg.load_seconds:.0f}s each")
    # Authenticated right after liveness in every round: noise that comes in bursts hits both alike.
    paths = {"liveness": cfg.liveness_path, "authenticated": cfg.auth_path, "one_read": ONE_READ_PATH}
    loads: dict[str, list[dict]] = {name: [] for name in paths}
    with httpload.gunicorn(ctx, database) as port:
        token = httpload.obtain_token(port, USER_NAME.format(0), ctx.password)
        tokens = {"liveness": None, "authenticated": token, "one_read": None}
        for name, path in paths.items():
            status, body = httpload.request(port, "GET", path, token=tokens[name])
            if status != 200:
                raise StepFailed(f"GET {path} answered {status} before the load: {body[:200]!r}")
            # Warm-up: every gunicorn thread opens its DB connection and fills its caches.
            httpload.load(port, path, token=tokens[name], seconds=WARMUP_SECONDS, connections=cfg.load_connections)
        # Interleaved rounds, so a burst of noise from elsewhere hits both sides alike.
        for _ in range(cfg.repeats):
            for name, path in paths.items():
                loads[name].append(
                    httpload.load_spread(
                        port,
                        path,
                        token=tokens[name],
                        seconds=cfg.load_seconds,
                        connections=cfg.load_connections,
                        workers=cfg.gunicorn_workers,
                    )
                )
    rps = {name: summarize([run["rps"] for run in runs]) for name, runs in loads.items()}
    rounds = [ratio(a["rps"], b["rps"]) for a, b in zip(loads["authenticated"], loads["liveness"], strict=True)]
    one_read_rounds = [ratio(a["rps"], b["rps"]) for a, b in zip(loads["one_read"], loads["liveness"], strict=True)]
    return {
        "liveness_path": cfg.liveness_path,
        "auth_path": cfg.auth_path,
        "server": f"gunicorn -c gunicorn.conf.py (gthread), {cfg.gunicorn_workers} workers × {cfg.gunicorn_threads} threads",
        "tool": loads["liveness"][0]["tool"],
        "connections": cfg.load_connections,
        "loads": loads,
        "rps": rps,
        "non_2xx": {name: sum(run["non_2xx"] for run in runs) for name, runs in loads.items()},
        "max_redraws": httpload.MAX_REDRAWS,
        "redrawn": sum(run.get("redrawn", 0) for runs in loads.values() for run in runs),
        "unbalanced": sum(not run.get("balanced", True) for runs in loads.values() for run in runs),
        "ratio": ratio(rps["authenticated"]["median"], rps["liveness"]["median"]),
        "round_ratios": summarize([r for r in rounds if r is not None]),
        "one_read_path": ONE_READ_PATH,
        "one_read_ratio": ratio(rps["one_read"]["median"], rps["liveness"]["median"]),
        "one_read_round_ratios": summarize([r for r in one_read_rounds if r is not None]),
        "auth_vs_one_read": ratio(rps["authenticated"]["median"], rps["one_read"]["median"]),
        "undrawn_ratio": undrawn_ratio(loads),
    }


def undrawn_ratio(loads: dict[str, list[dict]]) -> float | None:
    """Authenticated ÷ liveness from each round's first draw, as if no round had been redrawn."""
    first = {name: [run.get("first_rps", run["rps"]) for run in runs] for name, runs in loads.items()}
    if not first.get("authenticated") or not first.get("liveness"):
        return None
    return ratio(summarize(first["authenticated"])["median"], summarize(first["liveness"])["median"])
