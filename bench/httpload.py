"""HTTP measurements against TaskHub under gunicorn on 127.0.0.1: latency percentiles and load."""

from __future__ import annotations

import http.client
import http.cookies
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from bench import taskhub_side
from bench.config import ROOT
from bench.context import Context
from bench.procs import StepFailed, free_port, log_tail, python
from bench.stats import percentile

HOST = "127.0.0.1"
READY_SECONDS = 60.0
ADMIN_LOGIN_PATH = "/admin/login/"


@contextmanager
def gunicorn(ctx: Context, database: str, **extra_env: str) -> Iterator[int]:
    """Serve TaskHub on `database` under gunicorn.conf.py (gthread) on a free loopback port; yield the port."""
    port = free_port()
    env = ctx.taskhub_env(database, **extra_env)
    env.update(
        GUNICORN_BIND=f"{HOST}:{port}",
        GUNICORN_WORKERS=str(ctx.cfg.gunicorn_workers),
        GUNICORN_THREADS=str(ctx.cfg.gunicorn_threads),
        # No recycling mid-measurement: a worker restarting inside one timed window (but not the
        # other) would be counted as that endpoint's cost.
        GUNICORN_MAX_REQUESTS="0",
        # The product's settings and URLs, plus the auth section's reference endpoint.
        DJANGO_SETTINGS_MODULE="bench.taskhub_settings",
    )
    args = ["-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "config.wsgi:application"]
    proc = ctx.children.spawn(python(*args), env=env, name="gunicorn")
    try:
        _wait_ready(port, proc, ctx)
        yield port
    finally:
        ctx.children.stop(proc)


def _wait_ready(port: int, proc: subprocess.Popen, ctx: Context) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StepFailed(f"gunicorn exited {proc.returncode}:\n{log_tail(ctx.children.log_of(proc))}")
        try:
            status, _ = request(port, "GET", "/")
            if status:
                return
        except OSError:
            time.sleep(0.2)
    raise StepFailed(f"gunicorn did not answer on {HOST}:{port} within {READY_SECONDS:.0f}s")


def request(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: dict | None = None,
    conn=None,
    cookie: str | None = None,
) -> tuple[int, bytes]:
    """Send one request (on `conn` when given, kept alive) and return (status, body)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOST, port, timeout=30)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = cookie
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def obtain_token(port: int, username: str, password: str) -> str:
    """Log in through the token endpoint and return the access token."""
    status, body = request(port, "POST", taskhub_side.TOKEN_PATH, body={"username": username, "password": password})
    if status != 200:
        raise StepFailed(f"POST {taskhub_side.TOKEN_PATH} as {username} answered {status}: {body[:200]!r}")
    return json.loads(body)["access"]


def obtain_session(port: int, username: str, password: str) -> str:
    """Log in to the admin as a browser does (CSRF cookie and field) and return the Cookie header of the session."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", ADMIN_LOGIN_PATH)
        response = conn.getresponse()
        page = response.read().decode()
        csrf = _cookie(response, "csrftoken")
        field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if csrf is None or field is None:
            raise StepFailed(f"GET {ADMIN_LOGIN_PATH} gave no CSRF token (status {response.status})")
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": field.group(1), "next": "/admin/"}
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={csrf}"}
        conn.request("POST", ADMIN_LOGIN_PATH, body=form, headers=headers)
        response = conn.getresponse()
        response.read()
        session = _cookie(response, "sessionid")
        if response.status != 302 or session is None:
            raise StepFailed(f"POST {ADMIN_LOGIN_PATH} as {username} answered {response.status} without a session")
        return f"csrftoken={csrf}; sessionid={session}"
    finally:
        conn.close()


def _cookie(response: http.client.HTTPResponse, name: str) -> str | None:
    for header in response.headers.get_all("Set-Cookie") or []:
        cookie = http.cookies.SimpleCookie(header)
        if name in cookie:
            return cookie[name].value
    return None


def latency(port: int, path: str, *, token: str | None, requests: int, warmup: int, cookie: str | None = None) -> dict:
    """Return p50/p95/mean (ms) of `requests` sequential GETs after `warmup`, on one kept-alive connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    samples: list[float] = []
    statuses: Counter[int] = Counter()
    try:
        for i in range(warmup + requests):
            started = time.perf_counter()
            status, body = request(port, "GET", path, token=token, conn=conn, cookie=cookie)
            elapsed = (time.perf_counter() - started) * 1000
            if i >= warmup:
                samples.append(elapsed)
                statuses[status] += 1
            if status != 200:
                raise StepFailed(f"GET {path} answered {status}: {body[:200]!r}")
    finally:
        conn.close()
    return {
        "p50_ms": percentile(samples, 50),
        "p95_ms": percentile(samples, 95),
        "mean_ms": sum(samples) / len(samples),
        "requests": len(samples),
    }


def load(port: int, path: str, *, token: str | None, seconds: float, connections: int) -> dict:
    """Return requests/s of `path` under a bounded load (wrk if installed, else Python threads)."""
    if shutil.which("wrk"):
        return _wrk(port, path, token=token, seconds=seconds, connections=connections)
    return _python_load(port, path, token=token, seconds=seconds, connections=connections)


# gunicorn workers share one listening socket and each new connection goes to whichever worker
# accepts it first: now and then one worker takes (nearly) all of the load generator's keep-alive
# connections for the whole round, and the round measures one process instead of the server
# (seen here: 32 of 32 connections on one worker, liveness at a third of its rate).
MAX_REDRAWS = 4
SPREAD_SAMPLE_AFTER_SECONDS = 1.0


def connections_per_process(port: int) -> dict[int, int]:
    """Return {pid: established connections} of the processes serving `port` on 127.0.0.1."""
    import psutil

    spread: Counter[int] = Counter()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_ESTABLISHED and conn.laddr and conn.laddr.port == port and conn.pid:
            spread[conn.pid] += 1
    return dict(spread)


def balanced(spread: dict[int, int], *, workers: int, connections: int) -> bool:
    """Return True when every worker holds at least half its fair share of the connections."""
    if workers <= 1:
        return True
    floor = max(1, connections // workers // 2)
    counts = sorted(spread.values(), reverse=True) + [0] * max(0, workers - len(spread))
    return len(counts) >= workers and min(counts[:workers]) >= floor


def load_spread(port: int, path: str, *, token: str | None, seconds: float, connections: int, workers: int) -> dict:
    """`load`, run again (up to MAX_REDRAWS times) while the connections are not spread over the workers.

    The result carries the spread it was measured with, how many rounds were redrawn, and the
    requests/s of the first draw (`first_rps`), so the undrawn figure can be reported beside it.
    """
    redrawn = 0
    first_rps = None
    while True:
        spread: dict[int, int] = {}
        sampler = threading.Thread(target=_sample_spread, args=(port, seconds, spread), daemon=True)
        sampler.start()
        result = load(port, path, token=token, seconds=seconds, connections=connections)
        sampler.join(timeout=seconds + 5)
        fair = balanced(spread, workers=workers, connections=connections)
        first_rps = result["rps"] if first_rps is None else first_rps
        if fair or redrawn >= MAX_REDRAWS:
            spread_counts = sorted(spread.values(), reverse=True)
            return {**result, "spread": spread_counts, "balanced": fair, "redrawn": redrawn, "first_rps": first_rps}
        redrawn += 1


def _sample_spread(port: int, seconds: float, into: dict[int, int]) -> None:
    time.sleep(min(SPREAD_SAMPLE_AFTER_SECONDS, seconds / 2))
    into.update(connections_per_process(port))


def _wrk(port: int, path: str, *, token: str | None, seconds: float, connections: int) -> dict:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{max(int(seconds), 1)}s", "--timeout", "10s"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    args.append(f"http://{HOST}:{port}{path}")
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=False).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise StepFailed(f"wrk printed no Requests/sec:\n{out[-500:]}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "tool": "wrk",
        "rps": float(match.group(1)),
        "requests": int(total.group(1)) if total else None,
        "non_2xx": int(bad.group(1)) if bad else 0,
    }


def _python_load(port: int, path: str, *, token: str | None, seconds: float, connections: int) -> dict:
    deadline = time.monotonic() + seconds
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def hammer() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        local: Counter[int] = Counter()
        try:
            while time.monotonic() < deadline:
                status, _ = request(port, "GET", path, token=token, conn=conn)
                local[status] += 1
        finally:
            conn.close()
            with lock:
                statuses.update(local)

    started = time.monotonic()
    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    return {
        "tool": f"python threads ×{connections}",
        "rps": total / elapsed if elapsed else 0.0,
        "requests": total,
        "non_2xx": total - sum(n for s, n in statuses.items() if 200 <= s < 400),
    }
