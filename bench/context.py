"""What every benchmark section shares: settings, child processes, owned databases, the clock."""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bench import db
from bench.config import BenchConfig
from bench.procs import Children


class Unavailable(RuntimeError):
    """A measurement cannot run here (yet): the reason is reported instead of a number."""


class OutOfTime(Unavailable):
    """The run's time budget is spent: later measurements are skipped, not left running."""


@dataclass
class Context:
    """The state of one run, passed to every section."""

    cfg: BenchConfig
    children: Children
    created_databases: list[str] = field(default_factory=list)
    kept_databases: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    # One pair of throwaway keys per run, shared by every TaskHub child (server, workers, loaders).
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    django_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    memo: dict = field(default_factory=dict)

    def remaining(self) -> float:
        """Return the seconds left of the run's time budget."""
        return self.cfg.budget_seconds - (time.monotonic() - self.started)

    def require_time(self, seconds: float, what: str) -> None:
        """Raise Unavailable when fewer than `seconds` of the budget are left for `what`."""
        if self.remaining() < seconds:
            raise OutOfTime(f"{what} skipped: the time budget (BENCH_BUDGET_SECONDS) is spent")

    def rounds(self, what: str, worker_counts: Sequence[int]) -> Iterator[tuple[int, int]]:
        """Yield (repetition, workers) for every measured round, checking the budget before each."""
        for rep in range(self.cfg.repeats):
            for workers in worker_counts:
                self.require_time(self.cfg.step_estimate(self.cfg.tasks), what)
                self.log(f"{what}: rep {rep + 1}/{self.cfg.repeats}, {workers} worker(s), {self.cfg.tasks} tasks")
                yield rep, workers

    def own_database(self, name: str) -> None:
        """Create `name` afresh and remember to drop it at the end."""
        db.recreate_database(self.cfg, name)
        if name not in self.created_databases:
            self.created_databases.append(name)

    def adopt_database(self, name: str) -> None:
        """Remember to drop an existing `name` at the end (unless kept)."""
        db.check_bench_name(name)
        if name not in self.created_databases:
            self.created_databases.append(name)

    def mysql_env(self) -> dict[str, str]:
        """Return the environment of a child that talks to MariaDB."""
        cfg = self.cfg
        env = dict(os.environ)
        env.update(
            MYSQL_HOST=cfg.mysql_host,
            MYSQL_PORT=str(cfg.mysql_port),
            MYSQL_USERNAME=cfg.mysql_user,
            MYSQL_PASSWORD=cfg.mysql_password,
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        return env

    def taskhub_env(self, database: str, **extra: str) -> dict[str, str]:
        """Return the environment of a TaskHub process (server, worker, loader) on `database`, plus `extra`."""
        env = self.mysql_env()
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            TASKHUB_READ_DOTENV="0",
            DATABASE_TYPE="mysql",
            MYSQL_DATABASE=db.check_bench_name(database),
            DEBUG="0",
            JWT_SECRET_KEY=self.jwt_secret,
            DJANGO_SECRET_KEY=self.django_secret,
            LOG_LEVEL=os.environ.get("BENCH_TASKHUB_LOG_LEVEL", "WARNING"),
            BENCH_PASSWORD=self.password,
        )
        env.update(extra)
        return env

    def log(self, message: str) -> None:
        """Print a progress line with the time since the run started."""
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)
