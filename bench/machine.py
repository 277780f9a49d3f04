"""The machine and software versions a run measured, for RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from bench import db
from bench.config import BenchConfig

PACKAGES = ("Django", "mysqlclient", "gunicorn", "django-tasks", "django-tasks-db", "celery", "kombu", "redis")


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine() -> dict:
    """Return CPU model, cores, RAM, kernel and the load average now."""
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "ram_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "kernel": platform.release(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def versions(cfg: BenchConfig) -> dict:
    """Return Python, package, MariaDB, Redis and wrk versions ("unavailable: …" when unknown)."""
    found: dict[str, str] = {"Python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    try:
        found["MariaDB server"] = db.server_version(cfg)
    except Exception as exc:  # reported, not fatal: the sections say what they could not do
        found["MariaDB server"] = f"unavailable: {exc}"
    found["Redis server"] = _redis_version(cfg)
    found["wrk"] = _wrk_version()
    return found


def _redis_version(cfg: BenchConfig) -> str:
    try:
        import redis

        client = redis.Redis.from_url(cfg.redis_url, socket_connect_timeout=3)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except Exception as exc:
        return f"unavailable: {exc}"


def _wrk_version() -> str:
    if not shutil.which("wrk"):
        return "not installed (Python load generator used)"
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"wrk (?:debian/)?([\w.+-]+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"
