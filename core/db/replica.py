"""Read replica routing: the reads that may be stale go to the `replica` alias, everything else to the primary.

Only a view that opts in with `replica_reads(user)` (statistics, queue status, the task list, the
dashboard) may read the replica, and even then the primary answers when:

- the read is inside a transaction on the primary (it must see what the transaction sees);
- the same user wrote within `DATABASE_REPLICA_STICKY_SECONDS` (read-your-writes). Every
  non-GET request of a signed-in user stamps the user in the Django cache
  (`ReadYourWritesMiddleware`); with several web processes the cache must be shared (Redis:
  `CACHE_URL`), which `check_production` checks.

Writes always go to the primary; so does everything a worker does (it never opts in).

A replica that cannot be reached does not fail those reads: `replica_read` runs them again on the
primary, and a per-process circuit breaker (`ReplicaBreaker`) then sends them straight to the
primary for `DATABASE_REPLICA_RETRY_SECONDS`, so no request waits for a connect timeout. The
outage is logged once as a warning, every read it moves is counted
(`taskhub_replica_fallbacks_total`), and statistics say `fallback: true`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone

from core.db.errors import describe_database_error, is_database_unavailable
from core.metrics import REPLICA_FALLBACKS

REPLICA = "replica"
ROUTER = "core.db.replica.ReplicaRouter"
PRIMARY = DEFAULT_DB_ALIAS
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CACHE_KEY = "taskhub:replica:wrote:{}"
logger = logging.getLogger("taskhub.db")
# True inside `replica_reads` when the replica may answer this block's reads.
_replica_allowed: ContextVar[bool] = ContextVar("taskhub_replica_allowed", default=False)
# True inside `replica_reads` when the replica should have answered but could not be reached.
_fell_back: ContextVar[bool] = ContextVar("taskhub_replica_fell_back", default=False)
T = TypeVar("T")


class ReplicaBreaker:
    """Remember, in this process, that the replica could not be reached: its reads go to the primary a while.

    Closed: reads try the replica. `trip()` opens it for `DATABASE_REPLICA_RETRY_SECONDS`; after
    that one read tries the replica again (it trips again on failure, or `succeeded()` closes it).
    The first trip of an outage logs a warning; the recovery logs once at INFO.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._down = False

    def is_open(self) -> bool:
        with self._lock:
            return time.monotonic() < self._open_until

    def trip(self, exc: BaseException) -> None:
        seconds = settings.DATABASE_REPLICA_RETRY_SECONDS
        with self._lock:
            self._open_until = time.monotonic() + seconds
            first = not self._down
            self._down = True
        if first:
            logger.warning(
                "the read replica cannot be reached (%s): its reads go to the primary, trying it again every %gs",
                describe_database_error(exc),
                seconds,
            )

    def succeeded(self) -> None:
        with self._lock:
            recovered = self._down
            self._down = False
            self._open_until = 0.0
        if recovered:
            logger.info("the read replica answers again: its reads go back to it")


BREAKER = ReplicaBreaker()


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
    fell_back = allowed and BREAKER.is_open()
    if fell_back:
        REPLICA_FALLBACKS.inc()
    token = _replica_allowed.set(allowed and not fell_back)
    fallback_token = _fell_back.set(fell_back)
    try:
        yield REPLICA if allowed and not fell_back else PRIMARY
    finally:
        _fell_back.reset(fallback_token)
        _replica_allowed.reset(token)


def replica_read(user: Any, read: Callable[[], T]) -> T:
    """Run `read` inside `replica_reads(user)`; if the replica cannot be reached, run it again on the primary.

    Only a connection-level error of the replica's own connection moves the read (and trips
    `BREAKER`); any other error, and any error of the primary, is raised as it is.
    """
    with replica_reads(user) as alias:
        if alias != REPLICA:
            return read()
        replica = connections[REPLICA]
        # Django sets this flag on the connection whose call raised (connect included): it tells a
        # replica that is away from an error of the primary inside the same read.
        replica.errors_occurred = False
        try:
            result = read()
        except DatabaseError as exc:
            if not (is_database_unavailable(exc) and replica.errors_occurred):
                raise
            BREAKER.trip(exc)
            _close_quietly(REPLICA)
        else:
            BREAKER.succeeded()
            return result
    REPLICA_FALLBACKS.inc()
    fallback_token = _fell_back.set(True)
    try:
        return read()
    finally:
        _fell_back.reset(fallback_token)


def fell_back() -> bool:
    """Return whether this block's reads were meant for the replica but go to the primary (it is unreachable)."""
    return _fell_back.get()


def _close_quietly(alias: str) -> None:
    try:
        connections[alias].close()
    except DatabaseError:
        pass  # the connection is already gone; the next read opens a new one


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
