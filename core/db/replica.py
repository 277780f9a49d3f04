"""Read replica routing: the reads that may be stale go to the `replica` alias, everything else to the primary.

Only a view that opts in with `replica_reads(user)` (statistics, queue status, the task list, the
dashboard) may read the replica, and even then the primary answers when:

- the read is inside a transaction on the primary (it must see what the transaction sees);
- the same user wrote within `DATABASE_REPLICA_STICKY_SECONDS` (read-your-writes). Every
  non-GET request of a signed-in user stamps the user in the Django cache
  (`ReadYourWritesMiddleware`); with several web processes the cache must be shared (Redis:
  `CACHE_URL`), which `check_production` checks.

Writes always go to the primary; so does everything a worker does (it never opts in).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone

from core.db.errors import describe_database_error

REPLICA = "replica"
ROUTER = "core.db.replica.ReplicaRouter"
PRIMARY = DEFAULT_DB_ALIAS
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CACHE_KEY = "taskhub:replica:wrote:{}"
logger = logging.getLogger("taskhub.db")
# True inside `replica_reads` when the replica may answer this block's reads.
_replica_allowed: ContextVar[bool] = ContextVar("taskhub_replica_allowed", default=False)


def replica_configured() -> bool:
    """Return whether reads may be routed to a `replica` database (`DATABASE_REPLICA_URL` sets both)."""
    return REPLICA in settings.DATABASES and ROUTER in settings.DATABASE_ROUTERS


def note_write(user_id: Any) -> None:
    """Remember that `user_id` just wrote: their reads stay on the primary for the sticky window.

    A cache that is away is logged, never raised: the write itself has been done.
    """
    seconds = settings.DATABASE_REPLICA_STICKY_SECONDS
    if seconds <= 0:
        return
    try:
        cache.set(_CACHE_KEY.format(user_id), time.time(), timeout=seconds)
    except Exception as exc:  # every cache backend raises its own errors
        logger.warning("could not note a write for read-your-writes in the cache: %s", exc)


def wrote_recently(user_id: Any) -> bool:
    """Return whether `user_id` wrote within the sticky window (True when the cache cannot say: the primary is safe)."""
    try:
        return cache.get(_CACHE_KEY.format(user_id)) is not None
    except Exception as exc:  # every cache backend raises its own errors
        logger.warning("could not read recent writes from the cache, reading the primary: %s", exc)
        return True


@contextmanager
def replica_reads(user: Any = None) -> Iterator[str]:
    """Let the block's ORM reads go to the replica when that is safe; yield the alias that will answer.

    The primary answers when no replica is configured, or `user` wrote recently. Inside the
    block a transaction on the primary still pulls its reads back there (`ReplicaRouter`).
    """
    user_id = getattr(user, "pk", None)
    allowed = replica_configured() and not (user_id is not None and wrote_recently(user_id))
    token = _replica_allowed.set(allowed)
    try:
        yield REPLICA if allowed else PRIMARY
    finally:
        _replica_allowed.reset(token)


def read_alias() -> str:
    """Return the alias the ORM reads from here and now."""
    if _replica_allowed.get() and not connections[PRIMARY].in_atomic_block:
        return REPLICA
    return PRIMARY


class ReplicaRouter:
    """Django database router: the replica for opted-in reads outside transactions, the primary for the rest."""

    def db_for_read(self, model: type, **hints: Any) -> str:
        # Explicit, so an object read from the replica does not pull later reads there through
        # Django's "same database as the instance" default.
        return read_alias()

    def db_for_write(self, model: type, **hints: Any) -> str:
        return PRIMARY

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # the same data, wherever it was read

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return db == PRIMARY  # the replica gets the schema through replication


class ReadYourWritesMiddleware:
    """Stamp a signed-in user who sent a write (any non-GET request), so their next reads see it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if request.method not in SAFE_METHODS and replica_configured():
            # DRF sets `request.user` on the Django request once it has authenticated the token.
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                note_write(user.pk)
        return response


@dataclass(frozen=True)
class ReplicaState:
    """How far the replica is behind, as its replication threads report it."""

    alias: str
    lag_seconds: float | None  # None: unknown (replication stopped, not a replica, or no privilege)
    io_running: bool | None = None
    sql_running: bool | None = None
    error: str | None = None

    @property
    def replicating(self) -> bool:
        return bool(self.io_running and self.sql_running)


def replica_state(alias: str = REPLICA) -> ReplicaState:
    """Ask the replica how far behind it is (`SHOW REPLICA STATUS`; MySQL/MariaDB only).

    Needs the REPLICATION CLIENT privilege (MariaDB 10.5+: SLAVE MONITOR). A database error is
    reported in `error`, never raised: a monitor must not fail because the replica is away.
    """
    conn = connections[alias]
    if conn.vendor != "mysql":
        return ReplicaState(alias=alias, lag_seconds=None, error=f"{conn.vendor} reports no replication status")
    try:
        row = _replica_status_row(conn)
    except DatabaseError as exc:
        return ReplicaState(alias=alias, lag_seconds=None, error=describe_database_error(exc))
    if row is None:
        return ReplicaState(alias=alias, lag_seconds=None, error="the server is not a replica (no replication status)")
    lag = _first(row, "Seconds_Behind_Source", "Seconds_Behind_Master")
    io = _first(row, "Replica_IO_Running", "Slave_IO_Running")
    sql = _first(row, "Replica_SQL_Running", "Slave_SQL_Running")
    return ReplicaState(
        alias=alias,
        lag_seconds=float(lag) if lag is not None else None,
        io_running=str(io).lower() == "yes",
        sql_running=str(sql).lower() == "yes",
        error=(_first(row, "Last_SQL_Error", "Last_IO_Error") or None),
    )


def freshness(
    state: ReplicaState, *, heartbeat: datetime | None, now: datetime | None = None
) -> tuple[datetime | None, float | None]:
    """Return (as_of, lag_seconds) of data read from the replica.

    Replication's own lag when it reports one; otherwise (replication stopped: the lag is NULL)
    the newest worker heartbeat the replica holds: its data is at least that recent, so it is
    stale by at most `now - heartbeat`. (None, None) when neither is known.
    """
    now = now or timezone.now()
    if state.lag_seconds is not None and state.replicating:
        return now - timedelta(seconds=state.lag_seconds), state.lag_seconds
    if heartbeat is not None:
        return heartbeat, max(0.0, (now - heartbeat).total_seconds())
    return None, None


def _replica_status_row(conn: Any) -> dict[str, Any] | None:
    with conn.cursor() as cursor:
        try:
            cursor.execute("SHOW REPLICA STATUS")  # MySQL 8.0.22+, MariaDB 10.5.1+
        except DatabaseError:
            cursor.execute("SHOW SLAVE STATUS")
        row = cursor.fetchone()
        if row is None:
            return None
        columns = [column[0] for column in cursor.description]
    return dict(zip(columns, row, strict=True))


def _first(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in row:
            return row[name]
    return None
