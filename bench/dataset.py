"""The bench data set's rows: statuses, queues, owners and dates, generated without the database."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from django.utils import timezone

from tasks.models import TaskStatus

QUEUES = {"default": 0.5, "emails": 0.2, "reports": 0.2, "media": 0.1}
QUEUE_CUM = list(itertools.accumulate(QUEUES.values()))
# Plain strings (not the enum) because rows go to the driver without Django's value preparation.
HISTORY = {TaskStatus.SUCCEEDED.value: 0.88, TaskStatus.FAILED.value: 0.06, TaskStatus.CANCELLED.value: 0.03}
# The live set is the same size at every table size: workers and backlog bound it, not history.
# Pending tasks are scheduled in the future (workers leave them alone), running ones hold leases
# far ahead (lease recovery leaves them alone). 300 = 3 % of the smallest (10k) data set.
LIVE = {TaskStatus.PENDING.value: 200, TaskStatus.RUNNING.value: 100}
LIVE_MAX_SHARE = 0.1  # of a data set smaller than 10 x the live set


def live_statuses(rng: random.Random, count: int) -> list[str]:
    """Return `count` live statuses in LIVE's proportions, shuffled."""
    total = sum(LIVE.values())
    statuses = [status for status, n in LIVE.items() for _ in range(round(count * n / total))]
    rng.shuffle(statuses)
    return statuses


# Failed tasks' errors: FAILURE_KINDS exception classes × messages with varying numbers, so the
# console has FAILURE_KINDS groups of very different sizes (as production has), each with many
# different messages that fingerprint alike.
FAILURE_KINDS = 40


def failure(i: int) -> tuple[str, str]:
    """Return the exception class path and stored error of the i-th row when it failed (no draw from the rng)."""
    kind = (i * 7919) % FAILURE_KINDS if i % 3 else i % 4  # a few big groups, many small ones
    exception = ("builtins.TimeoutError", "builtins.ValueError", "tasks.errors.TaskFailure", "builtins.KeyError")[
        kind % 4
    ]
    short = exception.rsplit(".", 1)[1]
    step = "".join("ghijklmnop"[int(digit)] for digit in str(kind))  # letters: the fingerprint keeps them
    return (
        exception,
        f"{short}: step {step} failed for account {i % 9973} after {i % 17} ms\nTraceback (most recent call last): ...",
    )


def generate(
    rng: random.Random, rows: int, owner_ids: Sequence[int], queue_ids: Sequence[int], days: int, now: datetime
) -> Iterator[dict]:
    """Yield task rows in creation order (ids grow with time, as in production)."""
    span = timedelta(days=days).total_seconds()
    first = now - timedelta(days=days)
    live = live_statuses(rng, min(sum(LIVE.values()), int(rows * LIVE_MAX_SHARE)))
    live_at = dict(zip(rng.sample(range(rows), len(live)), live, strict=True))
    status_names, status_cum = list(HISTORY), list(itertools.accumulate(HISTORY.values()))
    for i in range(rows):
        status = live_at.get(i) or rng.choices(status_names, cum_weights=status_cum)[0]
        # Kept a minute back from now so created + wait + run is never in the future.
        created = first + timedelta(seconds=span * i / max(rows, 1) - 60)
        yield _row(rng, i, status, created, owner_ids, queue_ids, now)


def failed_row(
    rng: random.Random, i: int, created: datetime, owner_id: int, queue_id: int, *, exception: str, error: str
) -> dict:
    """Return a task row of `owner_id` in `queue_id` that failed for good with `error` ("Type: message")."""
    row = _row(rng, i, TaskStatus.FAILED, created, [owner_id], [queue_id] * len(QUEUES), timezone.now())
    row.update(queue_id=queue_id, exception=exception, error=error)
    return row


def live_rows(rng: random.Random, count: int, owner_ids: Sequence[int], queue_ids: Sequence[int]) -> Iterator[dict]:
    """Yield `count` more live rows (created within the last day), for a bigger backlog."""
    now = timezone.now()
    for i, status in enumerate(live_statuses(rng, count)):
        created = now - timedelta(seconds=rng.uniform(3600, 86400))
        yield _row(rng, i, status, created, owner_ids, queue_ids, now)


def _row(
    rng: random.Random,
    i: int,
    status: str,
    created: datetime,
    owner_ids: Sequence[int],
    queue_ids: Sequence[int],
    now: datetime,
) -> dict:
    if status == TaskStatus.RUNNING:
        created = now - timedelta(seconds=rng.uniform(60, 3600))
    wait = min(rng.expovariate(0.5), 25.0)
    run = min(rng.expovariate(2.0), 25.0)
    started = created + timedelta(seconds=wait)
    row = {
        "owner_id": rng.choice(owner_ids),
        "queue_id": rng.choices(queue_ids, cum_weights=QUEUE_CUM)[0],
        "status": status,
        "created_at": created,
        "run_at": created,
        "started_at": None,
        "finished_at": None,
        "lease_expires_at": None,
        "claimed_by": "",
        "attempts": 0,
        "task_type": "echo",
        "result": None,
        "error": "",
        "progress": 0,
        "cancel_requested": False,
        "payload": json.dumps({"n": i}),
    }
    if status == TaskStatus.PENDING:
        row["run_at"] = now + timedelta(days=rng.uniform(1, 30))
    elif status == TaskStatus.RUNNING:
        row.update(started_at=started, lease_expires_at=now + timedelta(days=7), claimed_by="bench-ghost")
        row.update(attempts=1, progress=50)
    elif status == TaskStatus.CANCELLED:
        row.update(finished_at=created + timedelta(seconds=wait), cancel_requested=True)
    else:
        row.update(started_at=started, finished_at=started + timedelta(seconds=run), attempts=1, progress=100)
        if status == TaskStatus.FAILED:
            exception, error = failure(i)
            row.update(task_type="fail", error=error, exception=exception, attempts=3)
        else:
            row["result"] = row["payload"]
    return row
