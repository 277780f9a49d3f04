"""The app's clock and the database server's clock agree."""

from __future__ import annotations

from datetime import UTC
from time import time

from django.conf import settings
from django.core.checks import CheckMessage
from django.db import connection

from diagnostics.checks.messages import error, ok, warning
from diagnostics.checks.registration import database_check

CHECK = "database.clock"
WARN_SKEW_SECONDS = 1.0


def measure_skew_seconds() -> float:
    """Return the DB server's UTC clock minus this machine's, taken at the middle of the round trip."""
    with connection.cursor() as cursor:
        before = time()
        cursor.execute("SELECT UTC_TIMESTAMP(6)")
        (server_now,) = cursor.fetchone()
        after = time()
    if server_now.tzinfo is None:
        server_now = server_now.replace(tzinfo=UTC)
    return server_now.timestamp() - (before + after) / 2


@database_check(CHECK, mysql_only=True)
def check_clock_skew() -> list[CheckMessage]:
    """Leases, run_at and token lifetimes assume one clock: warn at a second, fail past the JWT leeway."""
    return [skew_result(measure_skew_seconds(), leeway=settings.JWT_LEEWAY_SECONDS)]


def skew_result(skew: float, *, leeway: float) -> CheckMessage:
    """Judge a measured skew (positive: the database is ahead)."""
    ahead = "ahead of" if skew > 0 else "behind"
    message = f"The database server's clock is {abs(skew):.2f} s {ahead} this machine's."
    remedy = "Run NTP (chrony/systemd-timesyncd) on the app hosts and the database host."
    if abs(skew) > leeway:
        return error(
            CHECK,
            "diagnostics.E070",
            f"{message} That is more than the {leeway:g} s JWT leeway: at least one clock is wrong, so tokens "
            "from other instances may be refused and leases expire early or late.",
            remedy,
        )
    if abs(skew) > WARN_SKEW_SECONDS:
        return warning(CHECK, "diagnostics.W070", message, remedy)
    return ok(CHECK, message)
