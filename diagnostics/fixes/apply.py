"""Run a fix_mysql plan statement by statement, reporting progress on long conversions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from core.db.errors import describe_database_error, error_code
from diagnostics.fixes.plan import Fix, Plan

Report = Callable[[str], None]
PROGRESS_INTERVAL_SECONDS = 10.0
ACCESS_DENIED = 1227


@dataclass(frozen=True)
class Outcome:
    fix: Fix
    ok: bool
    seconds: float
    error: str = ""


def apply_plan(
    plan: Plan,
    *,
    connection: BaseDatabaseWrapper,
    report: Report,
    progress_interval: float = PROGRESS_INTERVAL_SECONDS,
) -> list[Outcome]:
    """Run each fix in order. A failing fix is reported and the rest still run: every ALTER is atomic."""
    outcomes = []
    total = len(plan.fixes)
    for number, fix in enumerate(plan.fixes, 1):
        rows = f" (≈ {fix.rows:,} rows)" if fix.rows is not None else ""
        report(f"[{number}/{total}] {describe_fix(fix)}{rows} …")
        started = monotonic()
        try:
            with ProgressWatcher(connection, report, interval=progress_interval):
                with connection.cursor() as cursor:
                    for sql in fix.sql:
                        cursor.execute(sql)
        except DatabaseError as exc:
            seconds = monotonic() - started
            message = describe_database_error(exc)
            if error_code(exc) == ACCESS_DENIED:
                message += " — this account may not do that; ask a DBA to run the SQL above"
            report(f"    ❌ failed after {seconds:.1f} s, nothing changed: {message}")
            outcomes.append(Outcome(fix, False, seconds, message))
        else:
            seconds = monotonic() - started
            report(f"    ✅ done in {seconds:.1f} s")
            outcomes.append(Outcome(fix, True, seconds))
    return outcomes


def describe_fix(fix: Fix) -> str:
    """Return a short title for a fix."""
    titles = {
        "database": "set the database default to utf8mb4 and its collation",
        "engine": "move to InnoDB",
        "charset": "convert to utf8mb4",
        "collation": "convert to the database's collation",
        "foreign_key": "add the foreign key",
        "global": "set the global variable",
    }
    return f"{fix.target}: {titles.get(fix.kind, fix.kind)}"


class ProgressWatcher:
    """While a statement runs, report every `interval` seconds (MariaDB also says how far it got)."""

    def __init__(self, connection: BaseDatabaseWrapper, report: Report, *, interval: float) -> None:
        self.connection = connection
        self.report = report
        self.interval = interval
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.connection_id: int | None = None

    def __enter__(self) -> ProgressWatcher:
        if self.connection.mysql_is_mariadb:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT CONNECTION_ID()")
                self.connection_id = cursor.fetchone()[0]
        self.started = monotonic()
        self.thread = threading.Thread(target=self._watch, name="fix-mysql-progress", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=self.interval + 5)

    def _watch(self) -> None:
        observer = None
        try:
            while not self.stopped.wait(self.interval):
                if observer is None and self.connection_id is not None:
                    observer = connections.create_connection(DEFAULT_DB_ALIAS)
                self.report(f"    … still running, {monotonic() - self.started:.0f} s{self._progress(observer)}")
        finally:
            if observer is not None:
                observer.close()

    def _progress(self, observer: BaseDatabaseWrapper | None) -> str:
        if observer is None:
            return ""
        try:
            with observer.cursor() as cursor:
                cursor.execute(
                    "SELECT PROGRESS, STAGE, MAX_STAGE FROM information_schema.PROCESSLIST WHERE ID = %s",
                    [self.connection_id],
                )
                row = cursor.fetchone()
        except DatabaseError:
            return ""  # progress is a courtesy; the statement itself is what matters
        if not row or row[0] is None:
            return ""
        progress, stage, max_stage = row
        return f", {float(progress):.0f}% (stage {stage}/{max_stage})" if max_stage else f", {float(progress):.0f}%"
