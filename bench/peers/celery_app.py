"""Celery peer: Redis broker, no result backend; completions counted in Redis by the task itself."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
QUEUE = "bench"
DONE_KEY = "bench:celery:done"
FIRST_KEY = "bench:celery:first"  # hash: worker pid -> first task start (epoch seconds)
LAST_KEY = "bench:celery:last"  # hash: worker pid -> last task end
PICKUP_KEY = "bench:celery:pickup"  # list: seconds from before .delay() to the task's start

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
)

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    # Created lazily inside each prefork child: a connection must not cross a fork.
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


@app.task(name="bench.noop", ignore_result=True)
def noop(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload, recording this process's first start, last finish and the count in Redis."""
    started = time.time()
    result = payload
    pid = os.getpid()
    pipe = _redis().pipeline(transaction=False)
    pipe.hsetnx(FIRST_KEY, pid, started)
    pipe.hset(LAST_KEY, pid, time.time())
    pipe.incr(DONE_KEY)
    pipe.execute()
    return result


@app.task(name="bench.stamp", ignore_result=True)
def stamp(sent: float, key: str = PICKUP_KEY) -> None:
    """Record in list `key` how long ago `sent` (the sender's clock just before sending) was: the pickup."""
    _redis().rpush(key, time.time() - sent)
