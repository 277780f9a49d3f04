"""Auth overhead: requests/s of an authenticated light endpoint vs the liveness endpoint."""

from __future__ import annotations

from bench import httpload, taskhub
from bench.config import USER_NAME
from bench.context import Context, Unavailable
from bench.procs import StepFailed
from bench.stats import ratio


def run(ctx: Context) -> dict:
    """Load each endpoint for BENCH_LOAD_SECONDS under gunicorn; return both rates and their ratio."""
    cfg = ctx.cfg
    found = taskhub.probe(ctx)
    reason = taskhub.missing(found, "token_url", "auth_url", "liveness_url")
    if reason:
        raise Unavailable(reason)
    database = taskhub.shared_database(ctx)
    ctx.log(f"auth: {cfg.auth_path} vs {cfg.liveness_path}, {cfg.load_seconds:.0f}s each")
    with httpload.gunicorn(ctx, database) as port:
        token = httpload.obtain_token(port, USER_NAME.format(0), ctx.password)
        for path, bearer in ((cfg.liveness_path, None), (cfg.auth_path, token)):
            status, body = httpload.request(port, "GET", path, token=bearer)
            if status != 200:
                raise StepFailed(f"GET {path} answered {status} before the load: {body[:200]!r}")
        kwargs = {"seconds": cfg.load_seconds, "connections": cfg.load_connections}
        liveness = httpload.load(port, cfg.liveness_path, token=None, **kwargs)
        authenticated = httpload.load(port, cfg.auth_path, token=token, **kwargs)
    return {
        "liveness_path": cfg.liveness_path,
        "auth_path": cfg.auth_path,
        "gunicorn_workers": cfg.gunicorn_workers,
        "liveness": liveness,
        "authenticated": authenticated,
        "ratio": ratio(authenticated["rps"], liveness["rps"]),
    }
