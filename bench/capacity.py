"""Workers per MySQL core (`capacity`): what each worker costs the primary's CPU, and so how many one core carries.

A private MariaDB (`scripts/cluster/mariadb-pair start-primary`: its own datadir under /tmp, port
BENCH_CAPACITY_PORT, binary log on; never the server of `MYSQL_*`) runs pinned to one core
(SERVER_CORE, `taskset`), the workers to the other (WORKER_CORE), so the server's CPU is one
core's work and the workers never take it. For each task duration (sleep tasks: the handlers
are light, the database work per task is the product's own) a backlog is enqueued in bulk, then
`manage.py run_worker` processes (default settings, `--concurrency 1`, no wake-ups) are added
one ramp step at a time (WORKER_COUNTS); after SETTLE_SECONDS each step is measured for
WINDOW_SECONDS:

- the server's CPU seconds (`/proc/<mariadbd>/stat`, every thread), less its idle rate measured
  with no worker at all (`baseline`), per task and per worker-second;
- the tasks finished (the server's own status counts), so the throughput and how much of it the
  workers' sleep time allows (`efficiency` = tasks/s × duration ÷ workers);
- the workers' own CPU (every process of their process groups, children included).

The derivation (`derive_ramp`): the server's CPU per task, from the steps below the largest
where the server core is not saturated and the backlog did not run dry, times the tasks a worker
finishes per second (for the floor 1 ÷ the task duration, the most any worker can; else the most
a worker finished here), is the server's CPU per worker-second: workers per core = 1 ÷ that.
The largest step checks it: the server's CPU there is predicted from the smaller steps
(per task at the throughput measured, and per worker) and compared with what it used. On two
cores the worker core (shared with anything else the machine runs) saturates long before the
server's: the first limited step is reported, the direct measurement stops there. A last window with IDLE_WORKERS workers and no task gives
the cost of an idle worker (its polls and heartbeats). Everything started is stopped, also on
failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import db, taskhub
from bench.config import ROOT
from bench.context import Context, Unavailable
from bench.procs import StepFailed, python
from bench.stats import ratio

DATABASE = "bench_capacity"
PORT = 3431  # BENCH_CAPACITY_PORT; the cluster tests use 3417/3418
SERVER_CORE, WORKER_CORE = 1, 0
TASK_SECONDS, TASK_SECONDS_QUICK = (0.02, 0.1), (0.02,)
WORKER_COUNTS, WORKER_COUNTS_QUICK = (1, 2, 4, 8, 16), (1, 4)
WINDOW_SECONDS, WINDOW_SECONDS_QUICK = 7.0, 3.0
SETTLE_SECONDS = 3.0
BASELINE_SECONDS = 5.0
IDLE_WORKERS = 4
BACKLOG_MARGIN = 1.2  # the backlog covers every window and settle time at full speed, and this much more
READY = "started: queues="
MIN_RELATIVE_RATE = 0.75  # of the most tasks per second a worker finished in any step
WORKER_SATURATION = 0.85  # of the worker core
SERVER_SATURATION = 0.85  # of the server core: the direct measurement of its limit
SERVER_LIMITS = {"server core", "backlog ran dry"}  # steps whose cost per task is not the server's normal one


def run(ctx: Context) -> dict:
    """Start the pinned server, ramp the workers for each task duration, measure an idle window; return the figures."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        raise Unavailable("needs two cores and taskset (the server and the workers on a core each)")
    quick = ctx.cfg.quick
    durations = TASK_SECONDS_QUICK if quick else TASK_SECONDS
    counts = WORKER_COUNTS_QUICK if quick else WORKER_COUNTS
    window = WINDOW_SECONDS_QUICK if quick else WINDOW_SECONDS
    ctx.require_time(60 + len(durations) * len(counts) * (window + SETTLE_SECONDS + 8), "capacity")
    port = int(os.environ.get("BENCH_CAPACITY_PORT", "") or PORT)
    if port == ctx.cfg.mysql_port:
        raise Unavailable(f"BENCH_CAPACITY_PORT {port} is the port of the MariaDB of MYSQL_*")
    folder = Path(tempfile.mkdtemp(prefix="bench-capacity-")) / "servers"
    ctx.log(f"capacity: private MariaDB on :{port} pinned to core {SERVER_CORE}, workers on core {WORKER_CORE}")
    try:
        pid = _start_server(folder, port)
        return _measure(ctx, port, pid, durations, counts, window)
    finally:
        _stop_server(folder)
        shutil.rmtree(folder.parent, ignore_errors=True)


# --- reading /proc ---------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str, clk_tck: int = CLK_TCK) -> tuple[int, float]:
    """Return (process group, CPU seconds of the process and its reaped children) from a /proc/<pid>/stat line."""
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces; fields from `state` (3rd) on
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return int(fields[2]), (utime + stime + cutime + cstime) / clk_tck


def process_cpu(pid: int) -> float:
    """Return the CPU seconds process `pid` (every thread) has used."""
    return parse_stat(Path(f"/proc/{pid}/stat").read_text())[1]


def groups_cpu(groups: Sequence[int]) -> float:
    """Return the CPU seconds used by every live process of the process groups `groups`."""
    wanted, total = set(groups), 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            group, seconds = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # it just exited
        if group in wanted:
            total += seconds
    return total


def core_ticks(text: str) -> dict[int, tuple[int, int]]:
    """Return {core: (busy ticks, all ticks)} from /proc/stat (idle and iowait are not busy)."""
    found = {}
    for line in text.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            found[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return found


def busy_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], core: int) -> float | None:
    """Return the share of `core`'s time that was busy (with anything) between two `core_ticks` readings."""
    if core not in before or core not in after:
        return None
    total = after[core][1] - before[core][1]
    return (after[core][0] - before[core][0]) / total if total > 0 else None


# --- the run ---------------------------------------------------------------------------------


def _start_server(folder: Path, port: int) -> int:
    env = {**os.environ, "PAIR_PRIMARY_PORT": str(port)}
    script = str(ROOT / "scripts" / "cluster" / "mariadb-pair")
    done = subprocess.run(
        ["taskset", "-c", str(SERVER_CORE), script, "start-primary", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode:
        raise StepFailed(f"the private MariaDB did not start: {done.stderr.strip()[-800:]}")
    return int((folder / "primary" / "mysqld.pid").read_text().strip())


def _stop_server(folder: Path) -> None:
    if folder.exists():
        script = str(ROOT / "scripts" / "cluster" / "mariadb-pair")
        subprocess.run([script, "stop", str(folder)], capture_output=True, timeout=60, check=False)


def _measure(ctx: Context, port: int, server: int, durations: Sequence[float], counts: Sequence[int], window: float):
    cfg = dataclasses.replace(ctx.cfg, mysql_host="127.0.0.1", mysql_port=port)
    env = ctx.taskhub_env(DATABASE, MYSQL_HOST="127.0.0.1", MYSQL_PORT=str(port), TASKHUB_WAKEUP_URL="")
    db.recreate_database(cfg, DATABASE)  # on the private server, gone with it
    ctx.children.run(python("manage.py", "migrate", "--noinput", "--verbosity", "0"), env=env, name="capacity-migrate",
                     timeout=600)  # fmt: skip
    ctx.children.run(python("-m", "bench.child", "users", "--count", "1"), env=env, name="capacity-users", timeout=120)
    time.sleep(2.0)  # the migration's aftermath (purge, flushing) out of the baseline
    first = process_cpu(server)
    time.sleep(BASELINE_SECONDS)
    raw: dict = {
        "method": {
            "window_seconds": window,
            "settle_seconds": SETTLE_SECONDS,
            "server_core": SERVER_CORE,
            "worker_core": WORKER_CORE,
            "worker_counts": list(counts),
            "version": db.server_version(cfg),
        },
        "baseline": {"seconds": BASELINE_SECONDS, "server_cpu": process_cpu(server) - first},
        "ramps": {},
    }
    worker_env = {**env, "LOG_LEVEL": "INFO"}
    for seconds in durations:
        db.truncate(cfg, DATABASE, taskhub.TASK_TABLES)
        backlog = backlog_size(seconds, counts, window)
        ctx.log(f"capacity: {seconds * 1000:g} ms tasks, backlog {backlog:,}, workers {counts}")
        ctx.children.run(
            python("-m", "bench.child", "backlog", "--count", str(backlog), "--seconds", str(seconds)),
            env=env,
            name="capacity-backlog",
            timeout=600,
        )
        raw["ramps"][str(seconds)] = _ramp(ctx, cfg, server, worker_env, counts, window)
    db.truncate(cfg, DATABASE, taskhub.TASK_TABLES)
    ctx.log(f"capacity: {IDLE_WORKERS} idle workers")
    raw["idle"] = _ramp(ctx, cfg, server, worker_env, (IDLE_WORKERS,), window)[0]
    return derive(raw)


def backlog_size(seconds: float, counts: Sequence[int], window: float) -> int:
    """Return enough tasks of `seconds` for a ramp over `counts` workers at full speed, with a margin."""
    return int(sum(n * (window + SETTLE_SECONDS + 2) / seconds for n in counts) * BACKLOG_MARGIN)


def _ramp(ctx: Context, cfg, server: int, env: dict[str, str], counts: Sequence[int], window: float) -> list[dict]:
    procs: list = []
    steps = []
    try:
        for n in counts:
            procs += _start_workers(ctx, env, n - len(procs), first=len(procs))
            time.sleep(SETTLE_SECONDS)
            steps.append(_window(cfg, server, [p.pid for p in procs], window))
            ctx.log(f"capacity: {n} worker(s): {_brief(steps[-1])}")
    finally:
        for proc in procs:  # all at once: each finishes its task and hands back what it claimed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            ctx.children.stop(proc)
    return steps


def _start_workers(ctx: Context, env: dict[str, str], count: int, *, first: int) -> list:
    args = ["taskset", "-c", str(WORKER_CORE), *python("manage.py", "run_worker")]
    procs = [ctx.children.spawn(args, env=env, name=f"capacity-worker{first + i}") for i in range(count)]
    deadline = time.monotonic() + 120
    for proc in procs:
        log = ctx.children.log_of(proc)
        while READY not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                for other in procs:
                    ctx.children.stop(other)
                raise StepFailed(f"a capacity worker did not start; log {log}")
            time.sleep(0.1)
    return procs


def _window(cfg, server: int, groups: list[int], window: float) -> dict:
    before = db.status_counts(cfg, DATABASE, "task_queue")
    cores0 = core_ticks(Path("/proc/stat").read_text())
    server0, workers0, t0 = process_cpu(server), groups_cpu(groups), time.monotonic()
    time.sleep(window)
    server1, workers1, t1 = process_cpu(server), groups_cpu(groups), time.monotonic()
    cores1 = core_ticks(Path("/proc/stat").read_text())
    after = db.status_counts(cfg, DATABASE, "task_queue")
    return {
        "worker_core_busy": busy_share(cores0, cores1, WORKER_CORE),
        "server_core_busy": busy_share(cores0, cores1, SERVER_CORE),
        "workers": len(groups),
        "seconds": t1 - t0,
        "tasks": after.get("succeeded", 0) - before.get("succeeded", 0),
        "server_cpu": server1 - server0,
        "worker_cpu": workers1 - workers0,
        "pending_left": after.get("pending", 0),
        "failed": after.get("failed", 0),
    }


def _brief(step: dict) -> str:
    return (
        f"{step['tasks'] / step['seconds']:.0f} tasks/s, server {step['server_cpu'] / step['seconds']:.1%} of a core, "
        f"workers {step['worker_cpu'] / step['seconds']:.1%}"
    )


# --- the derivation --------------------------------------------------------------------------


def step_figures(step: dict, task_seconds: float | None, baseline_rate: float) -> dict:
    """Return one window's derived figures: rates, the server's net cost per task and per worker-second, limits."""
    seconds, n, tasks = step["seconds"], step["workers"], step["tasks"]
    net = max(step["server_cpu"] - baseline_rate * seconds, 0.0)
    found = {
        **step,
        "rate": tasks / seconds,
        "per_worker_rate": tasks / seconds / n,
        "server_util": step["server_cpu"] / seconds,
        "worker_util": step["worker_cpu"] / seconds,
        "server_ms_per_task": 1000 * net / tasks if tasks else None,
        "worker_ms_per_task": 1000 * step["worker_cpu"] / tasks if tasks else None,
        "server_per_worker_second": net / (n * seconds),
        "efficiency": tasks / seconds * task_seconds / n if task_seconds else None,
        "dry": task_seconds is not None and step["pending_left"] == 0,
    }
    limits = []
    busy = step.get("worker_core_busy")  # the core's time busy with anything: the workers share it
    if max(found["worker_util"], busy or 0.0) >= WORKER_SATURATION:
        limits.append("worker core")
    if found["server_util"] >= SERVER_SATURATION:
        limits.append("server core")
    if found["dry"]:
        limits.append("backlog ran dry")
    found["limits"] = limits
    return found


def derive_ramp(steps: list[dict], task_seconds: float, baseline_rate: float) -> dict:
    """Return a ramp's figures, its workers per core, and the check of the prediction at its largest step.

    A step is limited when a core is saturated (the worker core busy with anything, the server
    busy on its own), the backlog ran dry, or its workers each finish fewer than
    MIN_RELATIVE_RATE × the most tasks a worker finished in any step (they wait for a core). The
    cost per task is the median over the steps before the largest (which is the check) where the
    server core and the backlog were not limited: workers slowed by their core change how many
    tasks the server sees, not what each costs it. Workers per core = 1 core ÷ (cost per task × the most tasks a worker finished per
    second); the floor assumes every worker finishes 1 ÷ task duration tasks per second (a worker
    with no overhead at all: the fewest workers a core carries).
    """
    figures = [step_figures(step, task_seconds, baseline_rate) for step in steps]
    best = max(f["per_worker_rate"] for f in figures)
    for found in figures:
        if found["per_worker_rate"] < MIN_RELATIVE_RATE * best:
            found["limits"].append("workers fall behind")
    check = figures[-1]
    basis = [f for f in figures[:-1] if f["tasks"] and not SERVER_LIMITS & set(f["limits"])]
    limited = [f["workers"] for f in figures if f["limits"]]
    found: dict = {"steps": figures, "basis_workers": [f["workers"] for f in basis], "limited_workers": limited}
    if not basis:
        return {**found, "workers_per_core": None}
    per_task = statistics.median(f["server_ms_per_task"] for f in basis) / 1000
    per_worker = statistics.median(f["server_per_worker_second"] for f in basis)
    by_workers = baseline_rate + check["workers"] * per_worker
    by_tasks = baseline_rate + check["rate"] * per_task
    return {
        **found,
        "server_ms_per_task": per_task * 1000,
        "server_per_worker_second": per_worker,
        "tasks_per_worker_second": best,
        "workers_per_core": 1 / (per_task * best) if per_task > 0 and best > 0 else None,
        "workers_per_core_floor": task_seconds / per_task if per_task > 0 else None,
        "check": {
            "workers": check["workers"],
            "measured_util": check["server_util"],
            "predicted_util_by_workers": by_workers,
            "predicted_util_by_tasks": by_tasks,
            "ratio_by_workers": ratio(check["server_util"], by_workers),
            "ratio_by_tasks": ratio(check["server_util"], by_tasks),
            "limits": check["limits"],
        },
    }


def derive(raw: dict) -> dict:
    """Return the section's figures from the raw windows (see the module's docstring)."""
    base = raw["baseline"]
    baseline_rate = base["server_cpu"] / base["seconds"]
    ramps = {key: derive_ramp(steps, float(key), baseline_rate) for key, steps in raw["ramps"].items()}
    found = {"method": raw["method"], "baseline_util": baseline_rate, "ramps": ramps, "raw": raw}
    if raw.get("idle"):
        idle = step_figures(raw["idle"], None, baseline_rate)
        per_worker = idle["server_per_worker_second"]
        found["idle"] = {**idle, "workers_per_core": 1 / per_worker if per_worker > 0 else None}
    return found


def duration_label(key: str) -> str:
    """Return "20 ms" for a ramp's key "0.02"."""
    return f"{float(key) * 1000:g} ms"
