"""Fixtures of the task tests: API clients and a second queue; bulk tasks, the executions table, worker processes."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tasks import transitions
from tasks.models import QueueConfig, TaskQueue
from tasks.tests import worker_handlers
from tasks.worker.child import PR_SET_PDEATHSIG

BASE_DIR = Path(settings.BASE_DIR)
# Short timers so lease, heartbeat and shutdown behaviour shows within seconds.
WORKER_ENV = {
    "TASKHUB_WORKER_HEARTBEAT_SECONDS": "0.3",
    "TASKHUB_WORKER_STALE_SECONDS": "4",
    "TASKHUB_POLL_INTERVAL_SECONDS": "0.2",
    "TASKHUB_SHUTDOWN_GRACE_SECONDS": "10",
    "TASKHUB_EXTRA_HANDLER_MODULES": worker_handlers.__name__,
    "LOG_LEVEL": "INFO",
}


def enqueue_many(owner, n: int = 1, *, queue: QueueConfig | None = None, task_type: str = "echo", **fields):
    """Insert `n` pending tasks in one transaction, through the enqueue transition."""
    queue = queue or QueueConfig.objects.get_or_create(name="default")[0]
    now = timezone.now()
    fields.setdefault("payload", {})
    fields.setdefault("run_at", now)
    tasks = [TaskQueue(owner=owner, queue=queue, task_type=task_type, created_at=now, **fields) for _ in range(n)]
    with transaction.atomic():
        transitions.enqueue(tasks)
    return tasks


def fail_for_good(
    owner, n: int = 1, *, error: str, exception: str = "app.errors.NotFound", task_type: str = "echo", **fields
) -> list[TaskQueue]:
    """Enqueue `n` tasks, claim them and record a permanent failure for each (`{i}` in `error`: the task id)."""
    from tasks.outcomes import Outcome, OutcomeKind

    tasks = enqueue_many(owner, n, task_type=task_type, max_attempts=1, **fields)
    worker_id = "test:1:failing"
    queues = transitions.runnable_queues([tasks[0].queue.name])
    claimed: list[TaskQueue] = []
    while len(claimed) < n:
        batch = transitions.claim(worker_id=worker_id, queues=queues, limit=n - len(claimed)).tasks
        assert batch, "the tasks to fail could not all be claimed"
        claimed += batch
    outcomes = [
        (task, Outcome(task.pk, OutcomeKind.PERMANENT, error=error.format(i=task.pk), exception=exception))
        for task in claimed
    ]
    transitions.record_outcomes(outcomes, worker_id=worker_id, queues={})
    return list(TaskQueue.objects.filter(pk__in=[task.pk for task in tasks]).order_by("pk"))


@pytest.fixture
def executions_table(transactional_db) -> Iterator[Callable[[], list[tuple]]]:
    """Create the test handlers' executions table; yield a function that reads it."""
    worker_handlers.create_executions_table()
    yield worker_handlers.executions
    worker_handlers.drop_executions_table()


def subprocess_env(**overrides: str) -> dict[str, str]:
    """Return the environment a worker process needs to see this test's database."""
    db = settings.DATABASES["default"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TASKHUB_", "MYSQL_", "SQLITE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        TASKHUB_READ_DOTENV="0",
        JWT_SECRET_KEY=settings.JWT_SECRET_KEY,
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        TASKHUB_VAR_DIR=str(settings.VAR_DIR),
        DATABASE_TYPE=connection.vendor if connection.vendor == "sqlite" else "mysql",
        PYTHONUNBUFFERED="1",
    )
    if connection.vendor == "sqlite":
        env["SQLITE_PATH"] = str(db["NAME"])
    else:
        env.update(
            MYSQL_DATABASE=db["NAME"],
            MYSQL_HOST=db["HOST"] or "127.0.0.1",
            MYSQL_PORT=str(db["PORT"] or 3306),
            MYSQL_USERNAME=db["USER"],
            MYSQL_PASSWORD=db["PASSWORD"],
        )
    env.update(WORKER_ENV)
    env.update(overrides)
    return env


def _die_with_the_tests() -> None:
    """Even if the test run itself is killed, its worker processes do not linger (Linux)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (AttributeError, OSError):
        pass


class WorkerProc:
    """A `manage.py run_worker` process started by a test, with its output in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", *args],
            cwd=BASE_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_the_tests,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Return the exit code, failing the test (with the output) if it takes longer."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout}s:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()


@pytest.fixture
def start_worker(tmp_path) -> Iterator[Callable[..., WorkerProc]]:
    """Start worker processes on the test database; all are killed at teardown."""
    started: list[WorkerProc] = []

    def start(*args: str, **env: str) -> WorkerProc:
        proc = WorkerProc(list(args), subprocess_env(**env), tmp_path / f"worker-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def wait_for(condition: Callable[[], object], *, timeout: float = 60, interval: float = 0.1, what: str = "") -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


# --- API clients ---------------------------------------------------------------------


@pytest.fixture
def alice_api(client_for, alice):
    return client_for(alice)


@pytest.fixture
def bob_api(client_for, bob):
    return client_for(bob)


@pytest.fixture
def staff_api(client_for, staff):
    return client_for(staff)


@pytest.fixture
def emails_queue(db):
    return QueueConfig.objects.create(name="emails", max_attempts=5)


def explain(sql: str, params=None) -> list[dict]:
    """Return the plan of `sql` (MySQL/MariaDB EXPLAIN), one dict a step with lower-case keys."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        columns = [c[0].lower() for c in cursor.description]
        return [dict(zip(columns, line, strict=True)) for line in cursor.fetchall()]
