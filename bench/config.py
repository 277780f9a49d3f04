"""Benchmark settings, all from the environment (BENCH_*), with a quick smoke-run profile."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
SECTIONS = (
    "peers",
    "taskhub",
    "djtasks",
    "scale",
    "auth",
    "memory",
    "shortcuts",
    "schedules",
    "latency",
    "fairness",
    "cluster",
    "console",
    "capacity",
)
# The bench users every TaskHub database gets: the first one and staff can log in.
USER_NAME = "bench_user_{:02d}"
STAFF_NAME = "bench_staff"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _require_loopback(host: str, what: str) -> str:
    """Refuse any target that is not this machine: benchmarks only ever load 127.0.0.1."""
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"{what} must be a loopback address (127.0.0.1, localhost), not {host!r}")


@dataclass(frozen=True)
class BenchConfig:
    """One run's settings (see bench/README.md for each variable)."""

    quick: bool
    tasks: int
    repeats: int
    scale_sizes: tuple[int, ...]
    claim_tasks: int
    memory_tasks: int
    memory_warmup: int
    http_requests: int
    http_warmup: int
    load_seconds: float
    load_connections: int
    gunicorn_workers: int
    gunicorn_threads: int
    bulk_chunk: int
    liveness_path: str
    auth_path: str
    keep_dataset: bool
    sections: tuple[str, ...]
    redis_url: str
    mysql_host: str
    mysql_port: int
    mysql_user: str
    mysql_password: str
    budget_seconds: float
    results_path: Path
    before_path: Path | None
    before_label: str

    def step_timeout(self, tasks: int) -> float:
        """Return a generous bound for a step that processes `tasks` tasks (a loaded machine is slow)."""
        return 120.0 + tasks / 10

    def step_estimate(self, tasks: int) -> float:
        """Return the time a step over `tasks` tasks is expected to need (at ≥ 100 tasks/s)."""
        return 30.0 + tasks / 100


def load_config() -> BenchConfig:
    """Read the BENCH_* environment into a BenchConfig."""
    quick = _env_flag("BENCH_QUICK")
    only = [s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        raise ValueError(f"BENCH_ONLY names unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    sizes_text = os.environ.get("BENCH_SCALE_SIZES", "").strip()
    default_sizes = "1000,5000" if quick else "10000,100000,1000000"
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
    _require_loopback(urlparse(redis_url).hostname or "", "BENCH_REDIS_URL")
    results = os.environ.get("BENCH_RESULTS_PATH", "").strip()
    before = os.environ.get("BENCH_BEFORE", "").strip()
    default_results = OUT_DIR / "RESULTS.quick.md" if quick else ROOT / "bench" / "RESULTS.md"
    return BenchConfig(
        quick=quick,
        tasks=_env_int("BENCH_TASKS", 300 if quick else 5000),
        repeats=_env_int("BENCH_REPEATS", 1 if quick else 3),
        scale_sizes=tuple(int(s) for s in (sizes_text or default_sizes).split(",") if s.strip()),
        claim_tasks=_env_int("BENCH_CLAIM_TASKS", 200 if quick else 2000),
        memory_tasks=_env_int("BENCH_MEMORY_TASKS", 3000 if quick else 50000),
        memory_warmup=_env_int("BENCH_MEMORY_WARMUP", 300 if quick else 5000),
        http_requests=_env_int("BENCH_HTTP_REQUESTS", 30 if quick else 300),
        http_warmup=_env_int("BENCH_HTTP_WARMUP", 5 if quick else 30),
        load_seconds=_env_float("BENCH_LOAD_SECONDS", 2.0 if quick else 10.0),
        load_connections=_env_int("BENCH_LOAD_CONNECTIONS", 8),
        gunicorn_workers=_env_int("BENCH_GUNICORN_WORKERS", 2),
        gunicorn_threads=_env_int("BENCH_GUNICORN_THREADS", 4),
        bulk_chunk=_env_int("BENCH_BULK_CHUNK", 500),
        liveness_path=os.environ.get("BENCH_LIVENESS_PATH", "/health/live"),
        auth_path=os.environ.get("BENCH_AUTH_PATH", "/api/auth/me/"),
        keep_dataset=_env_flag("BENCH_KEEP_DATASET"),
        sections=tuple(only) or SECTIONS,
        redis_url=redis_url,
        mysql_host=_require_loopback(os.environ.get("MYSQL_HOST", "127.0.0.1"), "MYSQL_HOST"),
        mysql_port=_env_int("MYSQL_PORT", 3306),
        mysql_user=os.environ.get("MYSQL_USERNAME", "root"),
        mysql_password=os.environ.get("MYSQL_PASSWORD", ""),
        budget_seconds=_env_float("BENCH_BUDGET_SECONDS", 1200.0 if quick else 5400.0),
        results_path=Path(results) if results else default_results,
        before_path=Path(before) if before else None,
        before_label=os.environ.get("BENCH_BEFORE_LABEL", "").strip() or "an earlier run",
    )
