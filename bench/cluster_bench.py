"""Many hosts on one MariaDB (`cluster`): the drill rig of `make cluster-test`, measured.

`scripts/cluster/netns-drills` builds the hosts (network namespaces: a private primary and its
replica, two gunicorn web hosts, two worker hosts, a client) and runs `scripts/cluster/bench.py`
in the client namespace instead of the drills. That client drains CLUSTER tasks per phase:
`idle` (no statistics polled), `primary` (statistics polled at 20 req/s with routing off) and
`replica` (the same with routing on), in an order that turns each round, then counts what the
primary served for statistics in a quiet window. Everything runs on the private servers (never
the MariaDB of `MYSQL_*`) and is bounded by CLUSTER_TIMEOUT; netns-drills stops what it started,
also when this section is stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from bench.config import ROOT
from bench.context import Context, Unavailable
from bench.procs import StepFailed, log_tail
from bench.stats import median_of, percentile, ratio, summarize

PREFIX = "thb"  # namespaces of its own: the drills (thc-*) may run beside it
NET = "10.78.0"
POLL_RATE = 20.0
TASKS, TASKS_QUICK = 6000, 1000
QUIET_SECONDS, QUIET_SECONDS_QUICK = 5.0, 3.0
# The client's own bound (set-up, the rounds, the quiet window); the section waits a little longer.
TIMEOUT, TIMEOUT_QUICK = 320, 150
TARGET_RATIO = 1.0
PHASES = ("idle", "primary", "replica")


def run(ctx: Context) -> dict:
    """Run the rig's client, read its JSON and sum it up."""
    cfg = ctx.cfg
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise Unavailable("needs root and iproute2 (network namespaces)")
    tasks = int(os.environ.get("BENCH_CLUSTER_TASKS", "") or (TASKS_QUICK if cfg.quick else TASKS))
    timeout = TIMEOUT_QUICK if cfg.quick else TIMEOUT
    ctx.require_time(timeout + 60, "cluster")
    out = Path(tempfile.mkdtemp(prefix="bench-cluster-")) / "cluster.json"
    env = {
        **os.environ,
        "PY": str(ROOT / ".venv" / "bin" / "python"),
        "CLUSTER_PREFIX": PREFIX,
        "CLUSTER_NET": NET,
        "CLUSTER_CLIENT": "scripts/cluster/bench.py",
        "CLUSTER_TIMEOUT": str(timeout),
        "CLUSTER_BENCH_OUT": str(out),
        "CLUSTER_BENCH_TASKS": str(tasks),
        "CLUSTER_BENCH_ROUNDS": str(cfg.repeats),
        "CLUSTER_BENCH_POLL_RATE": str(POLL_RATE),
        "CLUSTER_BENCH_QUIET_SECONDS": str(QUIET_SECONDS_QUICK if cfg.quick else QUIET_SECONDS),
    }
    ctx.log(f"cluster: 2 web × 2 worker hosts, {tasks} tasks × {len(PHASES)} phases × {cfg.repeats} round(s)")
    proc = ctx.children.spawn([str(ROOT / "scripts" / "cluster" / "netns-drills")], env=env, name="cluster")
    log = ctx.children.log_of(proc)
    try:
        finished = ctx.children.wait([proc], timeout + 90)
    finally:
        # netns-drills stops the servers and deletes the namespaces on SIGTERM: give it the time.
        ctx.children.stop(proc, grace=90.0)
    try:
        raw = json.loads(out.read_text()) if out.exists() else None
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    if raw is None or raw.get("error") or not finished or proc.returncode:
        why = (raw or {}).get("error") or ("timed out" if not finished else f"exited {proc.returncode}")
        raise StepFailed(f"the cluster rig failed ({why}); log {log}:\n{log_tail(log, 25)}")
    return summarize_cluster(raw)


def summarize_cluster(raw: dict) -> dict:
    """Return the section's figures from the client's JSON: rates by phase, the ratio, p95, statements."""
    rates = {phase: [r[phase]["rate"] for r in raw["rounds"] if r[phase].get("rate")] for phase in PHASES}
    drains = {phase: summarize(values) for phase, values in rates.items()}
    per_round = [ratio(r["replica"].get("rate"), r["primary"].get("rate")) for r in raw["rounds"]]
    found = ratio(median_of(drains["replica"]), median_of(drains["primary"]))
    polls = {}
    for phase in ("primary", "replica"):
        samples = [r[phase]["statistics"] for r in raw["rounds"]]
        ms = [value for s in samples for value in s["ms"]]
        polls[phase] = {
            "p50_ms": percentile(ms, 50) if ms else None,
            "p95_ms": percentile(ms, 95) if ms else None,
            "requests": len(ms),
            "answers": _merge(s["answers"] for s in samples),
        }
    return {
        "tasks": raw["tasks"],
        "rounds": len(raw["rounds"]),
        "poll_rate": raw["poll_rate"],
        "setup_seconds": raw.get("setup_seconds"),
        "seconds": raw.get("seconds"),
        "rates": rates,
        "ratio": found,
        "ratio_per_round": per_round,
        "target_ratio": TARGET_RATIO,
        "meets_target": found is not None and found >= TARGET_RATIO,
        "statistics": polls,
        "statements": raw["statements"],
        "raw": raw,
    }


def primary_statistics_reads(statements: dict, phase: str) -> int:
    """Return the rows the primary read from the statistics' tables in the quiet window of `phase`."""
    return sum(statements[phase]["primary"]["rows_read"].values())


def _merge(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for answers in counts:
        for key, n in answers.items():
            merged[key] = merged.get(key, 0) + n
    return merged
