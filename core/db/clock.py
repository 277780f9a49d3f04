"""The database server's clock: the one clock every host's leases are measured by.

Hosts' wall clocks drift apart (a VM resumed, NTP not running); a lease written with one host's
clock and judged by another's would end early or late by their difference. Lease ends are
written as "the database's now + the lease" and judged against the database's now, so only the
server's clock counts. A worker's own deadlines are measured on its monotonic clock from before
each round trip, so they end no later than the lease in the database.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now

# "The database's now + %s seconds" in hand-written SQL (UTC, whatever the session's time_zone);
# its one parameter is `sql_seconds(vendor, seconds)`. `%` doubled: the statements take parameters.
SQL_NOW_PLUS = {
    "mysql": "UTC_TIMESTAMP(6) + INTERVAL %s SECOND",
    "sqlite": "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW', %s)",
}


def sql_seconds(vendor: str, seconds: int) -> int | str:
    """Return the parameter of SQL_NOW_PLUS[vendor] for `seconds`."""
    return f"+{int(seconds)} seconds" if vendor == "sqlite" else int(seconds)


class DatabaseNow(Now):
    """The database's current time in UTC (MySQL's CURRENT_TIMESTAMP follows the session's time_zone)."""

    def as_mysql(self, compiler, connection, **extra_context):  # type: ignore[no-untyped-def]
        return self.as_sql(compiler, connection, template="UTC_TIMESTAMP(6)", **extra_context)


def database_now_plus(seconds: float) -> ExpressionWrapper:
    """Return the expression "the database's now + `seconds`", for a lease's end."""
    return ExpressionWrapper(DatabaseNow() + timedelta(seconds=seconds), output_field=DateTimeField())
