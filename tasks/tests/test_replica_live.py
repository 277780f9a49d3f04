"""The read replica and the lock probe against real replication (`make cluster-test`, marker `cluster`).

`scripts/cluster/mariadb-pair` starts a private MariaDB primary and a replica replicating from it
(own datadirs and ports; the server on 3306 is not touched). TaskHub runs against them as in
production: `migrate`, gunicorn with `DATABASE_REPLICA_URL`, a worker sending heartbeats. Replica
lag is injected with STOP SLAVE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import MySQLdb
import pytest
from django.conf import settings
from django.db.backends.mysql.base import DatabaseWrapper as MySQLDatabaseWrapper
from django.utils import timezone

from core.db import topology

pytestmark = pytest.mark.cluster

BASE_DIR = Path(settings.BASE_DIR)
PAIR = BASE_DIR / "scripts" / "cluster" / "mariadb-pair"
PRIMARY_PORT, REPLICA_PORT, WEB_PORT = 3417, 3418, 8717
DATABASE = "taskhub_pair"
PASSWORD = "pair-password-1"
STICKY_SECONDS, MAX_LAG_SECONDS, HEARTBEAT_SECONDS, RETRY_SECONDS = 2.0, 2.0, 0.5, 1.0
UNREACHABLE = "the read replica cannot be reached"
METRICS_TOKEN = "pair-metrics-token-0123456789abcdef"


@dataclass
class App:
    env: dict[str, str]
    token: str

    def get(self, path: str) -> tuple[int, Any]:
        return _request("GET", path, token=self.token)

    def post(self, path: str, body: dict) -> tuple[int, Any]:
        return _request("POST", path, body, token=self.token)

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def _request(method: str, path: str, body: dict | None = None, *, token: str = "") -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{WEB_PORT}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _server(port: int) -> MySQLdb.Connection:
    return MySQLdb.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)


def _execute(port: int, sql: str) -> list[tuple]:
    conn = _server(port)
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def pair() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="taskhub-pair-", dir="/tmp")) / "pair"
    started = subprocess.run([str(PAIR), "start", str(directory)], capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    try:
        yield directory
    finally:
        subprocess.run([str(PAIR), "stop", str(directory)], timeout=120)
        shutil.rmtree(directory.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def app(pair, tmp_path_factory) -> Iterator[App]:
    """Migrated primary, gunicorn with the replica configured, a worker heartbeating, a signed-in staff user."""
    var_dir = tmp_path_factory.mktemp("pair-var")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TASKHUB_", "MYSQL_", "DATABASE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        TASKHUB_READ_DOTENV="0",
        TASKHUB_VAR_DIR=str(var_dir),
        JWT_SECRET_KEY=settings.JWT_SECRET_KEY,
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        DATABASE_TYPE="mysql",
        MYSQL_HOST="127.0.0.1",
        MYSQL_PORT=str(PRIMARY_PORT),
        MYSQL_USERNAME="root",
        MYSQL_PASSWORD="",
        MYSQL_DATABASE=DATABASE,
        DATABASE_REPLICA_URL=f"mysql://root@127.0.0.1:{REPLICA_PORT}/{DATABASE}",
        DATABASE_REPLICA_STICKY_SECONDS=str(STICKY_SECONDS),
        DATABASE_REPLICA_MAX_LAG_SECONDS=str(MAX_LAG_SECONDS),
        TASKHUB_WORKER_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
        TASKHUB_POLL_INTERVAL_SECONDS="0.2",
        DATABASE_REPLICA_RETRY_SECONDS=str(RETRY_SECONDS),
        METRICS_TOKEN=METRICS_TOKEN,
        GUNICORN_BIND=f"127.0.0.1:{WEB_PORT}",
        GUNICORN_WORKERS="1",  # one process: its local cache remembers every write
        GUNICORN_ACCESS_LOG=str(var_dir / "access.log"),
        GUNICORN_ERROR_LOG=str(var_dir / "error.log"),
        DJANGO_SUPERUSER_USERNAME="operator",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        DJANGO_SUPERUSER_EMAIL="operator@example.com",
        PYTHONUNBUFFERED="1",
    )
    _execute(PRIMARY_PORT, f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    app = App(env=env, token="")
    for args in (("migrate", "--no-input"), ("createsuperuser", "--no-input")):
        done = app.manage(*args)
        assert done.returncode == 0, done.stderr[-3000:]
    log = (var_dir / "processes.log").open("wb")
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "config.wsgi"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "run_worker", "--queue", "default"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            try:
                status, body = _request("POST", "/api/auth/token/", {"username": "operator", "password": PASSWORD})
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
                continue
            assert status == 200, body
            app.token = body["access"]
            break
        assert app.token, (var_dir / "processes.log").read_text()[-3000:]
        yield app
    finally:
        for process in (worker, web):
            process.terminate()
        for process in (worker, web):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        log.close()


def _enqueue_later(app: App, n: int) -> None:
    """Pending tasks due in an hour: the worker leaves them alone, the statistics count them."""
    run_at = (timezone.now() + timedelta(hours=1)).isoformat()
    for _ in range(n):
        status, body = app.post("/api/tasks/", {"task_type": "echo", "payload": {}, "run_at": run_at})
        assert status == 201, body


def _replica_caught_up(app: App, pending: int) -> dict:
    for _ in range(100):
        status, body = app.get("/api/tasks/statistics")
        assert status == 200, body
        if body["source"] == "replica" and body["by_status"]["pending"] == pending and not body["stale"]:
            return body
        time.sleep(0.1)
    pytest.fail(f"the replica did not catch up: {body}")


def test_statistics_from_a_stopped_replica_are_stale_and_say_by_how_much(app):
    _enqueue_later(app, 5)
    status, right_after = app.get("/api/tasks/statistics")
    assert (status, right_after["source"], right_after["by_status"]["pending"]) == (200, "primary", 5)
    time.sleep(STICKY_SECONDS + 0.2)
    fresh = _replica_caught_up(app, 5)
    assert fresh["lag_seconds"] < MAX_LAG_SECONDS

    _execute(REPLICA_PORT, "STOP SLAVE")
    stopped_at = time.monotonic()
    try:
        _enqueue_later(app, 3)
        time.sleep(STICKY_SECONDS + 1.5)
        status, stale = app.get("/api/tasks/statistics")
        elapsed = time.monotonic() - stopped_at
        assert (status, stale["source"], stale["by_status"]["pending"], stale["stale"]) == (200, "replica", 5, True)
        # Data as of the last heartbeat replicated before the stop: stale by at least the time since, and by
        # at most that plus one heartbeat period (and some scheduling slack).
        assert elapsed - 0.5 <= stale["lag_seconds"] <= elapsed + HEARTBEAT_SECONDS + 2.0, stale

        status, monitor = app.get("/api/tasks/db-monitor")
        assert (status, monitor["replica"]["sql_running"], monitor["replica"]["healthy"]) == (200, False, False)
        status, health = _request("GET", "/health/queue?format=json")
        [(name, verdict)] = [(k, v) for k, v in health.items() if k.startswith("ReplicaLag(")]
        assert status == 503 and "not replicating" in verdict, health
        status, readiness = _request("GET", "/health/?format=json")
        assert status == 200, readiness  # a replica's trouble never takes the instances out of rotation

        report = app.manage("check_production", "--json")
        found = {result["id"] for result in json.loads(report.stdout)["results"] if result.get("id")}
        assert "diagnostics.W033" in found, report.stdout
    finally:
        _execute(REPLICA_PORT, "START SLAVE")
    caught_up = _replica_caught_up(app, 8)
    assert caught_up["lag_seconds"] < MAX_LAG_SECONDS


def _fallbacks_counted() -> float:
    request = urllib.request.Request(
        f"http://127.0.0.1:{WEB_PORT}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    [value] = [line.split()[-1] for line in text.splitlines() if line.startswith("taskhub_replica_fallbacks_total ")]
    return float(value)


def test_statistics_fall_back_to_the_primary_while_the_replica_server_is_down(app, pair):
    _enqueue_later(app, 2)
    time.sleep(STICKY_SECONDS + 0.2)
    status, on_primary = _request("GET", "/api/tasks/statistics?scope=all", token=app.token)
    pending = on_primary["by_status"]["pending"]
    _replica_caught_up(app, pending)
    log = Path(app.env["TASKHUB_VAR_DIR"]) / "processes.log"
    warnings_before = log.read_text(errors="replace").count(UNREACHABLE)
    counted_before = _fallbacks_counted()

    subprocess.run([str(PAIR), "stop-replica", str(pair)], check=True, timeout=60)
    try:
        answers = [app.get("/api/tasks/statistics") for _ in range(5)]
        for status, body in answers:
            assert status == 200, body
            assert (body["source"], body["fallback"], body["stale"], body["lag_seconds"]) == ("primary", True, False, 0)
            assert body["by_status"]["pending"] == pending, body
        status, queues = app.get("/api/tasks/queue-status")
        assert status == 200, queues
        assert _fallbacks_counted() - counted_before >= 6
        # One gunicorn process: the outage is logged once, however many reads it moved.
        assert log.read_text(errors="replace").count(UNREACHABLE) - warnings_before == 1
    finally:
        subprocess.run([str(PAIR), "start-replica", str(pair)], check=True, timeout=120)
    time.sleep(RETRY_SECONDS + 0.2)
    back = _replica_caught_up(app, pending)
    assert back["fallback"] is False
    assert "the read replica answers again" in log.read_text(errors="replace")


def _wrapper(port: int, alias: str) -> MySQLDatabaseWrapper:
    return MySQLDatabaseWrapper(
        {
            "ENGINE": "django.db.backends.mysql",
            "HOST": "127.0.0.1",
            "PORT": port,
            "USER": "root",
            "PASSWORD": "",
            "NAME": DATABASE,
            "OPTIONS": {"charset": "utf8mb4"},
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": False,
            "AUTOCOMMIT": True,
            "ATOMIC_REQUESTS": False,
            "TIME_ZONE": None,
            "TEST": {},
        },
        alias,
    )


def test_the_lock_probe_catches_locking_reads_sent_to_the_replica(app, django_db_blocker):
    """Two real servers: the probe's second connection, or its first, reaches the replica instead of the primary."""
    primary, replica = _wrapper(PRIMARY_PORT, "pair_primary"), _wrapper(REPLICA_PORT, "pair_replica")
    other_primary = _wrapper(PRIMARY_PORT, "pair_primary_2")
    with django_db_blocker.unblock():
        _probe_across_the_pair(primary, replica, other_primary)


def _probe_across_the_pair(primary, replica, other_primary) -> None:
    try:
        assert topology.lock_probe(primary, other_primary).problem is None
        split = topology.lock_probe(primary, replica)  # the second worker's locking read went to the replica
        assert split.problem and "different servers" in split.problem
        on_replica = topology.lock_probe(replica, other_primary)  # the first one's did
        assert on_replica.problem and "read-only server" in on_replica.problem
    finally:
        for conn in (primary, replica, other_primary):
            conn.close()
