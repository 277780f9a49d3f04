"""The read replica (DATABASE_REPLICA_URL) answers, replicates, keeps up, and read-your-writes holds across processes."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage
from django.db import DatabaseError, connections

from core.db.errors import describe_database_error
from core.db.replica import REPLICA, replica_configured, replica_state
from diagnostics.checks.messages import error, ok, warning
from diagnostics.checks.registration import configuration_check, database_check

REPLICA_CHECK = "database.replica"
STICKY_CHECK = "database.replica_cache"
# Caches that live inside one process: a write noted by one web process is unknown to the others.
PROCESS_LOCAL_CACHES = ("django.core.cache.backends.locmem.", "django.core.cache.backends.dummy.")


@database_check(REPLICA_CHECK, mysql_only=True)
def check_replica() -> list[CheckMessage]:
    """Connect to the replica and read its replication status: both threads running, lag within the limit."""
    if not replica_configured():
        return [ok(REPLICA_CHECK, "No read replica (DATABASE_REPLICA_URL): every read goes to the primary.")]
    replica = connections[REPLICA]
    where = f"{replica.settings_dict.get('HOST') or 'localhost'}:{replica.settings_dict.get('PORT') or 3306}"
    try:
        replica.ensure_connection()
    except DatabaseError as exc:
        return [
            error(
                REPLICA_CHECK,
                "diagnostics.E036",
                f"Cannot connect to the read replica at {where}: {describe_database_error(exc)}. Statistics, queue "
                "status, task lists and the dashboard will answer 503 while it is away.",
                "Check DATABASE_REPLICA_URL and that the replica is running, or unset it to read the primary.",
            )
        ]
    state = replica_state(REPLICA)
    limit = settings.DATABASE_REPLICA_MAX_LAG_SECONDS
    if not state.replicating or state.lag_seconds is None:
        return [
            warning(
                REPLICA_CHECK,
                "diagnostics.W033",
                f"The read replica at {where} is not replicating ({state.error or 'a replication thread is stopped'}): "
                "the statistics it serves grow older and say stale.",
                "Start replication on it (START REPLICA; SHOW REPLICA STATUS shows the error), and give the account "
                "REPLICATION CLIENT (MariaDB: SLAVE MONITOR) so TaskHub can read its lag.",
            )
        ]
    if state.lag_seconds > limit:
        return [
            warning(
                REPLICA_CHECK,
                "diagnostics.W033",
                f"The read replica at {where} lags {state.lag_seconds:g} s behind the primary "
                f"(DATABASE_REPLICA_MAX_LAG_SECONDS is {limit:g}).",
                "Look for long transactions or an overloaded replica; statistics read from it say stale meanwhile.",
            )
        ]
    return [ok(REPLICA_CHECK, f"The read replica at {where} replicates, {state.lag_seconds:g} s behind the primary.")]


@configuration_check(STICKY_CHECK)
def check_replica_cache() -> list[CheckMessage]:
    """With a replica, the cache that remembers a user's recent writes is shared by every web process."""
    if not replica_configured():
        return [ok(STICKY_CHECK, "No read replica: read-your-writes needs no shared cache.")]
    if settings.DATABASE_REPLICA_STICKY_SECONDS <= 0:
        return [
            warning(
                STICKY_CHECK,
                "diagnostics.W034",
                "DATABASE_REPLICA_STICKY_SECONDS is 0: a user may not see their own write in statistics and lists "
                "read from the replica.",
                "Set it above the replica's usual lag (default 10).",
            )
        ]
    backend = settings.CACHES["default"]["BACKEND"]
    if backend.startswith(PROCESS_LOCAL_CACHES):
        return [
            warning(
                STICKY_CHECK,
                "diagnostics.W034",
                f"A read replica is configured but the cache ({backend.rsplit('.', 1)[-1]}) lives inside each process: "
                "a user who writes through one web process may read the replica's older data through another.",
                "Set CACHE_URL to a cache every web process shares, e.g. redis://cache-host:6379/1.",
            )
        ]
    return [
        ok(STICKY_CHECK, "Recent writes are remembered in a shared cache: read-your-writes holds on every instance.")
    ]
