"""The multi-host drills of `make cluster-test`, run from the `client` namespace by scripts/cluster/netns-drills.

Hosts are network namespaces on one bridge (CLUSTER_NET.0/24): db (MariaDB primary :3306, its
replica :3307, Redis), web1 and web2 (gunicorn), work1 and work2 (run_worker), client (this
process). Each drill prints one verdict line, `DRILL <n> <name>: PASS|FAIL — <what was seen>`.
Every process started here is stopped before it returns; netns-drills removes the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import MySQLdb

BASE_DIR = Path(__file__).resolve().parents[2]
PY = sys.executable
NET = os.environ["CLUSTER_NET"]
PREFIX = os.environ["CLUSTER_PREFIX"]
WORK = Path(os.environ["CLUSTER_WORK"])
DB_HOST = f"{NET}.2"
PRIMARY_PORT, REPLICA_PORT = 3306, 3307
HOSTS = {"web1": f"{NET}.11", "web2": f"{NET}.12", "work1": f"{NET}.21", "work2": f"{NET}.22"}
DATABASE = "taskhub"
KEY = "cluster-drill-jwt-key-0123456789abcdef0123456789"
ODD_KEY = "cluster-drill-other-jwt-key-9876543210fedcba987654"
PASSWORD = "drill-password-1"
STICKY_SECONDS = 2.0
EXECUTIONS = "worker_test_execution"
DRAIN_TASKS = int(os.environ.get("CLUSTER_DRAIN_TASKS", "20000"))

BASE_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": os.environ.get("HOME", "/root"),
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "TASKHUB_READ_DOTENV": "0",
    "TASKHUB_VAR_DIR": str(WORK / "var"),
    "DJANGO_SECRET_KEY": "cluster-drill-django-key-0123456789abcdef0123456789",
    "JWT_SECRET_KEY": KEY,
    "DATABASE_TYPE": "mysql",
    "MYSQL_HOST": DB_HOST,
    "MYSQL_PORT": str(PRIMARY_PORT),
    "MYSQL_USERNAME": "root",
    "MYSQL_PASSWORD": "",
    "MYSQL_DATABASE": DATABASE,
    "MYSQL_CONNECT_TIMEOUT": "2",
    "DATABASE_REPLICA_URL": f"mysql://root@{DB_HOST}:{REPLICA_PORT}/{DATABASE}",
    "DATABASE_REPLICA_STICKY_SECONDS": str(STICKY_SECONDS),
    "DATABASE_REPLICA_MAX_LAG_SECONDS": "2",
    "CACHE_URL": f"redis://{DB_HOST}:6379/0",
    "EXTRA_ALLOWED_HOSTS": ",".join(HOSTS.values()),
    "TASKHUB_EXTRA_HANDLER_MODULES": "tasks.tests.worker_handlers",
    "TASKHUB_WORKER_HEARTBEAT_SECONDS": "1",
    "TASKHUB_WORKER_STALE_SECONDS": "6",
    "TASKHUB_POLL_INTERVAL_SECONDS": "0.2",
    "TASKHUB_INSTANCE_REPORT_SECONDS": "1",
    "LOGIN_THROTTLE_RATE": "1000/min",
    "LOGIN_ADDRESS_THROTTLE_RATE": "1000/min",
    "LOG_LEVEL": "INFO",
}


class Host:
    """Processes started in one namespace, each in its own process group, with output in WORK/logs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ip = HOSTS.get(name, DB_HOST)
        self.processes: list[subprocess.Popen] = []

    def command(self, args: list[str], **env: str) -> list[str]:
        environment = {**BASE_ENV, **env}
        return [
            "ip",
            "netns",
            "exec",
            f"{PREFIX}-{self.name}",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in environment.items()),
            *args,
        ]

    def start(self, label: str, args: list[str], **env: str) -> subprocess.Popen:
        log = (WORK / "logs" / f"{self.name}-{label}.log").open("ab")
        process = subprocess.Popen(
            self.command(args, **env), cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        process.label = label  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def run(self, args: list[str], timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(args, **env), cwd=BASE_DIR, capture_output=True, text=True, timeout=timeout)

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 30) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, sig)
                process.wait(wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(10)
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)

    def link(self, up: bool) -> None:
        subprocess.run(["ip", "-n", f"{PREFIX}-{self.name}", "link", "set", "eth0", "up" if up else "down"], check=True)


def web(host: Host, *, port: int = 8000, key: str = KEY, label: str = "gunicorn", **env: str) -> subprocess.Popen:
    return host.start(
        label,
        [PY, "-m", "gunicorn", "-c", "gunicorn.conf.py", "config.wsgi"],
        GUNICORN_BIND=f"{host.ip}:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="4",
        GUNICORN_ACCESS_LOG="/dev/null",
        JWT_SECRET_KEY=key,
        **env,
    )


def worker(host: Host, *queues: str, concurrency: int = 4) -> subprocess.Popen:
    args = [PY, "manage.py", "run_worker", "--concurrency", str(concurrency)]
    for queue in queues:
        args += ["--queue", queue]
    return host.start("worker", args)


# --- HTTP and SQL from the client host ----------------------------------------------------------


def call(method: str, url: str, body: Any = None, token: str = "", timeout: float = 30) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"null")
        except ValueError:
            return exc.code, raw[:200].decode(errors="replace")


def base(name: str, port: int = 8000) -> str:
    return f"http://{HOSTS[name]}:{port}"


def login(web_name: str, username: str) -> dict:
    status, body = call("POST", base(web_name) + "/api/auth/token/", {"username": username, "password": PASSWORD})
    assert status == 200, (status, body)
    return body


def sql(statement: str, params: Any = None, *, port: int = PRIMARY_PORT) -> list[tuple]:
    conn = MySQLdb.connect(
        host=DB_HOST, port=port, user="root", password="", database=DATABASE, autocommit=True, connect_timeout=5
    )
    try:
        cursor = conn.cursor()
        cursor.execute(statement, params)
        return list(cursor.fetchall())
    finally:
        conn.close()


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def bulk_enqueue(web_name: str, token: str, n: int, *, queue: str = "default", payload: dict | None = None,
                 run_at: str | None = None, chunk: int = 1000) -> list[int]:  # fmt: skip
    ids: list[int] = []
    item: dict[str, Any] = {"task_type": "test.record", "payload": payload or {}, "queue": queue}
    if run_at:
        item["run_at"] = run_at
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        status, body = call("POST", base(web_name) + "/api/tasks/bulk/", {"tasks": [item] * size}, token, timeout=120)
        assert status == 201, (status, str(body)[:300])
        ids += [task["id"] for task in body["tasks"]]
    return ids


def status_counts(ids: list[int]) -> dict[str, int]:
    low, high = min(ids), max(ids)
    rows = sql("SELECT status, COUNT(*) FROM task_queue WHERE id BETWEEN %s AND %s GROUP BY status", [low, high])
    return dict(rows)


# --- The drills ------------------------------------------------------------------------------


class Rig:
    def __init__(self) -> None:
        self.hosts = {name: Host(name) for name in (*HOSTS, "db")}
        self.workers: dict[str, subprocess.Popen] = {}

    def setup(self, *, workers: bool = True) -> None:
        """Create and migrate the database, the drill users and queue; start both web hosts (and worker hosts)."""
        (WORK / "logs").mkdir(parents=True, exist_ok=True)
        (WORK / "var").mkdir(parents=True, exist_ok=True)
        conn = MySQLdb.connect(host=DB_HOST, port=PRIMARY_PORT, user="root", password="", autocommit=True)
        conn.cursor().execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        conn.close()
        web1 = self.hosts["web1"]
        for args in (["manage.py", "migrate", "--no-input"],):
            done = web1.run([PY, *args])
            assert done.returncode == 0, done.stderr[-2000:]
        script = (
            "from django.contrib.auth import get_user_model; from tasks.models import QueueConfig;"
            "from tasks.tests.worker_handlers import create_executions_table; U = get_user_model();"
            f"U.objects.create_superuser('operator', 'op@example.com', '{PASSWORD}');"
            f"[U.objects.create_user(n, n + '@example.com', '{PASSWORD}') for n in ('alice', 'bob')];"
            "QueueConfig.objects.create(name='drill3', task_timeout_seconds=8, retry_backoff_seconds=1,"
            " retry_backoff_max_seconds=1, max_attempts=5);"
            "create_executions_table()"
        )
        done = web1.run([PY, "manage.py", "shell", "-c", script])
        assert done.returncode == 0, done.stderr[-2000:]
        for name in ("web1", "web2"):
            web(self.hosts[name])
        for name in ("web1", "web2"):
            wait_for(f"{name} to answer", lambda n=name: call("GET", base(n) + "/health/live")[0] == 200, 60)
        for name in ("work1", "work2") if workers else ():
            self.workers[name] = worker(self.hosts[name], "default")

    def teardown(self) -> None:
        for host in self.hosts.values():
            host.stop_all()

    # 1 ---------------------------------------------------------------------------------------
    def drill_tokens(self) -> str:
        tokens = login("web1", "alice")
        status, me = call("GET", base("web2") + "/api/auth/me/", token=tokens["access"])
        assert (status, me.get("username")) == (200, "alice"), (status, me)
        first = call("POST", base("web1") + "/api/auth/token/refresh/", {"refresh": tokens["refresh"]})
        second = call("POST", base("web2") + "/api/auth/token/refresh/", {"refresh": tokens["refresh"]})
        assert first[0] == second[0] == 200, (first, second)
        assert first[1]["refresh"] == second[1]["refresh"], "the replay inside the grace got another successor"
        odd = web(self.hosts["web2"], port=8001, key=ODD_KEY, label="odd-gunicorn")
        try:
            wait_for("the odd instance", lambda: call("GET", base("web2", 8001) + "/health/live")[0] == 200, 60)
            login_status, _ = call(
                "POST", base("web2", 8001) + "/api/auth/token/", {"username": "bob", "password": PASSWORD}
            )
            rejected, body = call("GET", base("web2", 8001) + "/api/auth/me/", token=tokens["access"])
            assert rejected == 401, (rejected, body)
            report = self.hosts["work1"].run([PY, "manage.py", "check_production", "--json"])
            results = json.loads(report.stdout)["results"]
            named = [r["message"] for r in results if r.get("id") == "diagnostics.E080"]
            assert named, report.stdout[-2000:]
        finally:
            self.hosts["web2"].stop(odd)
        return (
            f"web1's token accepted by web2; one refresh replayed on the other instance inside the grace got the same "
            f"successor; the instance with another JWT_SECRET_KEY (login {login_status}) refused web1's token (401 "
            f"{body.get('code')}) and check_production on work1 names it: {named[0][:160]}"
        )

    # 2 ---------------------------------------------------------------------------------------
    def drill_drain(self) -> str:
        token = login("web1", "alice")["access"]
        token2 = login("web2", "alice")["access"]
        started = time.monotonic()
        half = DRAIN_TASKS // 2
        with ThreadPoolExecutor(4) as pool:
            parts = list(
                pool.map(
                    lambda job: bulk_enqueue(job[0], job[1], job[2]),
                    [("web1", token, half // 2), ("web1", token, half - half // 2),
                     ("web2", token2, half // 2), ("web2", token2, DRAIN_TASKS - half - half // 2)],
                )
            )  # fmt: skip
        ids = [task_id for part in parts for task_id in part]
        enqueued_in = time.monotonic() - started
        assert len(set(ids)) == DRAIN_TASKS
        wait_for(
            "the drain",
            lambda: status_counts(ids).get("succeeded", 0) == DRAIN_TASKS,
            timeout=float(os.environ.get("CLUSTER_DRAIN_TIMEOUT", "420")),
            interval=1.0,
        )
        drained_in = time.monotonic() - started
        low, high = min(ids), max(ids)
        total, distinct = sql(
            f"SELECT COUNT(*), COUNT(DISTINCT task_id) FROM {EXECUTIONS} WHERE task_id BETWEEN %s AND %s", [low, high]
        )[0]
        per_worker = sql(
            f"SELECT worker, COUNT(*) FROM {EXECUTIONS} WHERE task_id BETWEEN %s AND %s GROUP BY worker", [low, high]
        )
        hosts = {self.worker_host(worker_id) for worker_id, _ in per_worker}
        assert (total, distinct) == (DRAIN_TASKS, DRAIN_TASKS), f"{total} executions of {distinct} tasks"
        assert hosts == {"work1", "work2"}, per_worker
        return (
            f"{DRAIN_TASKS} tasks enqueued through web1 and web2 in {enqueued_in:.1f}s, all succeeded after "
            f"{drained_in:.1f}s ({DRAIN_TASKS / drained_in:.0f} tasks/s end to end); {total} executions, one per task; "
            f"by worker host: " + ", ".join(f"{self.worker_host(w)} {n}" for w, n in per_worker)
        )

    def worker_host(self, worker_id: str) -> str:
        pids = {name: process.pid for name, process in self.workers.items()}
        pid = int(worker_id.rsplit(":", 2)[1])
        for name, process in self.workers.items():
            if self._descends(pid, process.pid):
                return name
        return f"pid {pid} (not {pids})"

    @staticmethod
    def _descends(pid: int, ancestor: int) -> bool:
        while pid > 1:
            if pid == ancestor:
                return True
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        return False

    # 3 ---------------------------------------------------------------------------------------
    def drill_cut_off(self) -> str:
        work1, work2 = self.hosts["work1"], self.hosts["work2"]
        token = login("web1", "bob")["access"]
        lonely = worker(work1, "drill3", concurrency=4)
        # Each runs 3 s; the lease (the queue's task timeout) is 8 s, renewed by work1's heartbeats until the cut.
        ids = bulk_enqueue("web1", token, 4, queue="drill3", payload={"sleep": 3})
        placeholders = ",".join(["%s"] * len(ids))

        def running_on_work1() -> list[str]:
            rows = sql(f"SELECT claimed_by FROM task_queue WHERE id IN ({placeholders}) AND status = 'running'", ids)
            return [r[0] for r in rows] if len(rows) == len(ids) else []

        claimed_by = set(wait_for("work1 to run the 4 tasks", running_on_work1, 30, 0.2))
        work1.link(False)
        cut_at = time.monotonic()
        helper = worker(work2, "drill3", concurrency=4)
        try:

            def settled_by_work2() -> bool:
                rows = sql(f"SELECT status, attempts, claimed_by FROM task_queue WHERE id IN ({placeholders})", ids)
                return all(s == "succeeded" and a >= 2 for s, a, _ in rows)

            wait_for("work2 to recover and finish the tasks", settled_by_work2, 60)
            recovered_in = time.monotonic() - cut_at
            before = sql(
                f"SELECT id, status, attempts, result FROM task_queue WHERE id IN ({placeholders}) ORDER BY id", ids
            )
            (link_up_at,) = sql("SELECT UTC_TIMESTAMP(6)")[0]
            work1.link(True)
            # work1 finished its attempts while cut off: once it is back (its heartbeat is written again)
            # its next rounds offer those outcomes.
            marks = ",".join(["%s"] * len(claimed_by))
            wait_for(
                "work1 to reconnect",
                lambda: sql(
                    f"SELECT COUNT(*) FROM task_worker WHERE worker_id IN ({marks}) AND last_heartbeat_at > %s",
                    [*claimed_by, link_up_at],
                )[0][0],
                120,
            )
            time.sleep(4)
            after = sql(
                f"SELECT id, status, attempts, result FROM task_queue WHERE id IN ({placeholders}) ORDER BY id", ids
            )
            assert after == before, f"late outcomes overwrote newer state: {before} -> {after}"
            results = {json.loads(r[3])["pid"] for r in after}
            executions = sql(f"SELECT task_id, attempt FROM {EXECUTIONS} WHERE task_id IN ({placeholders})", ids)
            log = (WORK / "logs" / "work1-worker.log").read_text(errors="replace")
            fenced = sum(f"task {task_id}: its lease could not be renewed" in log for task_id in ids)
        finally:
            work1.stop(lonely, signal.SIGKILL)
            work2.stop(helper)
        return (
            f"work1 ({', '.join(sorted(claimed_by))[:60]}) cut off while running 4 tasks; work2 recovered them after "
            f"their lease and ran them again ({recovered_in:.1f}s after the cut, attempt 2, results from "
            f"{len(results)} work2 child pid(s)); work1 came back and wrote nothing over them (rows unchanged after "
            f"its heartbeat resumed: it dropped {fenced} outcome(s) itself for lack of a lease, any other it offered "
            f"met the attempt guard); {len(executions)} executions recorded by the handler; work1 then killed"
        )

    # 4 ---------------------------------------------------------------------------------------
    def drill_primary_restart(self) -> str:
        token = login("web1", "alice")["access"]
        n = 3000
        ids = bulk_enqueue("web1", token, n // 2) + bulk_enqueue("web2", token, n - n // 2)
        probe_id = ids[0]
        seen: dict[int, int] = {}
        codes: set[str] = set()
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                for name in ("web1", "web2"):
                    try:
                        status, body = call("GET", f"{base(name)}/api/tasks/{probe_id}/", token=token, timeout=10)
                    except (urllib.error.URLError, OSError):
                        status, body = 0, None
                    seen[status] = seen.get(status, 0) + 1
                    if status == 503 and isinstance(body, dict):
                        codes.add(body.get("code"))
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        time.sleep(1.0)
        restart = self.hosts["db"].run(["scripts/cluster/mariadb-pair", "restart-primary", str(WORK / "pair"), "6"])
        assert restart.returncode == 0, restart.stderr
        time.sleep(2.0)
        stop.set()
        poller.join(30)
        # Every task ends: the handler writes to the restarted primary itself, so an attempt can fail
        # (and a task that failed every attempt during the outage is failed, not lost).
        wait_for(
            "the drain after the restart",
            lambda: sum(status_counts(ids).values()) == n and set(status_counts(ids)) <= {"succeeded", "failed"},
            300,
            1.0,
        )
        low, high = min(ids), max(ids)
        runs = sql(
            f"SELECT task_id, attempt, started, finished FROM {EXECUTIONS} WHERE task_id BETWEEN %s AND %s "
            "ORDER BY task_id, started",
            [low, high],
        )
        failed_attempts = {
            (task_id, entry["attempt"])
            for task_id, errors in sql(
                "SELECT id, attempt_errors FROM task_queue WHERE id BETWEEN %s AND %s", [low, high]
            )
            for entry in json.loads(errors or "[]")
        }
        by_task: dict[int, list[tuple]] = {}
        for task_id, attempt, started, finished in runs:
            by_task.setdefault(task_id, []).append((attempt, started, finished))
        overlapping = [t for t, r in by_task.items() if any(b[1] < a[2] for a, b in zip(r, r[1:], strict=False))]
        # A second execution is a retry only after an attempt TaskHub recorded as failed (here: the
        # handler's own write lost with the connection, perhaps after the server committed it).
        unexplained = [
            t for t, r in by_task.items() if any((t, attempt) not in failed_attempts for attempt, _, _ in r[:-1])
        ]
        statuses = status_counts(ids)
        succeeded_unrun = sql(
            f"SELECT COUNT(*) FROM task_queue q WHERE q.id BETWEEN %s AND %s AND q.status = 'succeeded' "
            f"AND NOT EXISTS (SELECT 1 FROM {EXECUTIONS} e WHERE e.task_id = q.id)",
            [low, high],
        )[0][0]
        assert set(seen) <= {200, 503}, f"answers while the primary restarted: {seen}"
        assert seen.get(503), f"no 503 seen while the primary was down: {seen}"
        assert codes == {"database_unavailable"}, codes
        assert not overlapping, f"tasks that ran twice at once: {overlapping[:10]}"
        assert not unexplained, f"tasks run again without a failed attempt before: {unexplained[:10]}"
        assert succeeded_unrun == 0, f"{succeeded_unrun} tasks succeeded without running"
        reruns = sum(1 for r in by_task.values() if len(r) > 1)
        return (
            f"primary down 6s during a {n}-task drain: the API answered {seen} (503s all database_unavailable, "
            f"never 401/500); workers and web instances reconnected; {statuses}; no two runs of a task "
            f"overlapped; {reruns} task(s) ran again, each after an attempt recorded as failed"
        )

    # 5 ---------------------------------------------------------------------------------------
    def drill_replica_lag(self) -> str:
        token = login("web2", "bob")["access"]
        run_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        bulk_enqueue("web2", token, 10, run_at=run_at)
        time.sleep(STICKY_SECONDS + 0.5)

        def fresh_stats(pending: int) -> dict | None:
            status, body = call("GET", base("web1") + "/api/tasks/statistics", token=token)
            ok = status == 200 and body["source"] == "replica" and not body["stale"]
            return body if ok and body["by_status"]["pending"] == pending else None

        wait_for("fresh statistics from the replica", lambda: fresh_stats(10), 30)
        worker_selects_before = self.replica_statements_from("work1", "work2")
        web_selects_before = self.replica_statements_from("web1", "web2")
        sql("STOP SLAVE", port=REPLICA_PORT)
        stopped = time.monotonic()
        try:
            new_ids = bulk_enqueue("web2", token, 5, run_at=run_at)
            status, detail = call("GET", f"{base('web1')}/api/tasks/{new_ids[0]}/", token=token)
            assert status == 200, "a task just enqueued was not found (read from the replica?)"
            time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
            views = {}
            for name in ("web1", "web2"):
                status, body = call("GET", base(name) + "/api/tasks/statistics", token=token)
                views[name] = body
                elapsed = time.monotonic() - stopped
                assert status == 200 and body["source"] == "replica" and body["stale"] is True, body
                assert body["by_status"]["pending"] == 10, body  # the 5 new ones are not on the replica yet
                assert elapsed - 1.5 <= body["lag_seconds"] <= elapsed + 3.0, (elapsed, body)
        finally:
            sql("START SLAVE", port=REPLICA_PORT)
        wait_for("the replica to catch up", lambda: fresh_stats(15), 60)
        worker_selects = self.replica_statements_from("work1", "work2") - worker_selects_before
        web_selects = self.replica_statements_from("web1", "web2") - web_selects_before
        assert worker_selects == 0, f"workers read the replica {worker_selects} times"
        assert web_selects > 0, "the web hosts' statistics reads are not counted on the replica: the measure is blind"
        lags = ", ".join(f"{name} lag {body['lag_seconds']}s as_of {body['as_of']}" for name, body in views.items())
        return (
            f"replication stopped 10s: statistics from the replica said stale ({lags}) and counted 10 of 15 pending; "
            f"the task enqueued meanwhile was found at once (primary); the workers' hosts ran no statement on the "
            f"replica while the web hosts ran {web_selects} (CLIENT_STATISTICS); after START SLAVE the statistics were fresh again"
        )

    def replica_statements_from(self, *hosts: str) -> int:
        """Statements the replica ran for clients at these hosts' addresses (MariaDB userstat)."""
        rows = sql(
            "SELECT CLIENT, SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS FROM information_schema.CLIENT_STATISTICS",
            port=REPLICA_PORT,
        )
        addresses = {HOSTS[host] for host in hosts}
        return sum(int(n) for client, n in rows if client in addresses)


DRILLS = (
    ("1", "tokens across instances", Rig.drill_tokens),
    ("2", f"{DRAIN_TASKS} tasks, two webs, two worker hosts, exactly once", Rig.drill_drain),
    ("3", "a worker host cut off, then killed", Rig.drill_cut_off),
    ("4", "the primary restarted during a drain", Rig.drill_primary_restart),
    ("5", "replica lag", Rig.drill_replica_lag),
)


def main(selected: list[str]) -> int:
    rig = Rig()
    failures = 0
    try:
        rig.setup()
        for number, name, drill in DRILLS:
            if selected and number not in selected:
                continue
            started = time.monotonic()
            try:
                detail = drill(rig)
                print(f"DRILL {number} {name}: PASS — {detail} ({time.monotonic() - started:.0f}s)", flush=True)
            except Exception as exc:
                failures += 1
                print(f"DRILL {number} {name}: FAIL — {exc!r} ({time.monotonic() - started:.0f}s)", flush=True)
                traceback.print_exc()
    finally:
        rig.teardown()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
