"""Celery + Redis peer: `.delay()` per task, drained by prefork workers (1×c1, 2×c1, 1×default)."""

from __future__ import annotations

import os
import time

import redis

from bench.context import Context, Unavailable
from bench.procs import StepFailed, python
from bench.stats import rate

CONFIGS = ((1, 1), (2, 1), (1, None))  # (processes, --concurrency); None = Celery's default
POLL_SECONDS = 0.2


def _label(processes: int, concurrency: int | None) -> str:
    conc = f"c{concurrency}" if concurrency else f"default c{os.cpu_count()}"
    return f"{processes}×{conc}"


def worker_args(index: int, concurrency: int | None, queue: str = "bench") -> list[str]:
    """Return the command line of Celery worker `index` (prefork, on `queue`)."""
    args = ["-m", "celery", "-A", "bench.peers.celery_app", "worker", "--pool", "prefork", "-Q", queue]
    args += ["-n", f"{queue}{index}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    args += ["--loglevel", "WARNING"]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    return python(*args)


def _drain_span(client: redis.Redis, keys: tuple[str, str]) -> float | None:
    firsts = [float(v) for v in client.hvals(keys[0])]
    lasts = [float(v) for v in client.hvals(keys[1])]
    if not firsts or not lasts:
        return None
    return max(lasts) - min(firsts)


def run(ctx: Context) -> dict:
    """Measure Celery enqueue and drain rates; return the raw runs."""
    from bench.peers.celery_app import DONE_KEY, FIRST_KEY, LAST_KEY

    cfg = ctx.cfg
    client = redis.Redis.from_url(cfg.redis_url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unavailable(f"Redis at {cfg.redis_url} does not answer: {exc}") from exc
    env = ctx.mysql_env()
    env["BENCH_REDIS_URL"] = cfg.redis_url
    runs = []
    try:
        for rep in range(cfg.repeats):
            for processes, concurrency in CONFIGS:
                label = _label(processes, concurrency)
                ctx.require_time(cfg.step_estimate(cfg.tasks), "Celery")
                ctx.log(f"celery: rep {rep + 1}, {label}, {cfg.tasks} tasks")
                client.flushdb()  # only the benchmark's own Redis database
                enq = ctx.children.run(
                    python("-m", "bench.peers.celery_child", "enqueue", str(cfg.tasks)),
                    env=env,
                    name="celery-enqueue",
                    timeout=cfg.step_timeout(cfg.tasks),
                )
                procs = [
                    ctx.children.spawn(worker_args(i, concurrency), env=env, name=f"celery-worker{i}")
                    for i in range(processes)
                ]
                deadline = time.monotonic() + cfg.step_timeout(cfg.tasks)
                done = 0
                while time.monotonic() < deadline:
                    done = int(client.get(DONE_KEY) or 0)
                    if done >= cfg.tasks or any(p.poll() is not None for p in procs):
                        break
                    time.sleep(POLL_SECONDS)
                for proc in procs:
                    ctx.children.stop(proc)
                if done < cfg.tasks:
                    raise StepFailed(f"Celery ({label}) completed {done} of {cfg.tasks} tasks")
                seconds = _drain_span(client, (FIRST_KEY, LAST_KEY))
                runs.append(
                    {
                        "label": label,
                        "workers": processes,
                        "concurrency": concurrency or os.cpu_count(),
                        "rep": rep,
                        "enqueue_rate": rate(enq["count"], enq["seconds"]),
                        "drain_rate": rate(done, seconds),
                        "drain_seconds": seconds,
                    }
                )
    finally:
        client.flushdb()
        client.close()
    return {"runs": runs}
