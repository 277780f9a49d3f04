"""MySQL's time-zone tables, when Django will ask the server to convert time zones."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage
from django.db import connection

from diagnostics.checks.messages import error, ok
from diagnostics.checks.registration import database_check

CHECK = "database.time_zones"


def time_zone_tables_needed() -> bool:
    """Return True when Django's date lookups on MySQL will call CONVERT_TZ with named zones.

    With USE_TZ, datetimes are stored in the connection's zone (UTC unless DATABASES sets
    TIME_ZONE), and `__date`, `__hour`, Trunc*() and Extract() convert to the current time zone
    (TIME_ZONE unless activated otherwise) in SQL via CONVERT_TZ — which returns NULL for named
    zones when the server's mysql.time_zone* tables are empty. Same zone: no conversion at all.
    """
    return bool(settings.USE_TZ) and settings.TIME_ZONE != connection.timezone_name


@database_check(CHECK, mysql_only=True)
def check_time_zone_tables() -> list[CheckMessage]:
    """If conversions are needed, the server can convert between the two zones."""
    source, target = connection.timezone_name, settings.TIME_ZONE
    if not time_zone_tables_needed():
        reason = "USE_TZ is off" if not settings.USE_TZ else f"TIME_ZONE is {target}, the same as the connection's"
        return [ok(CHECK, f"Time-zone tables not needed: {reason}, so Django converts no time zones in SQL.")]
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONVERT_TZ('2000-01-01 00:00:00', %s, %s)", [source, target])
        (converted,) = cursor.fetchone()
    if converted is None:
        return [
            error(
                CHECK,
                "diagnostics.E060",
                f"USE_TZ is on and TIME_ZONE is {target} (the connection stores {source}), so date lookups and "
                "truncations convert time zones in SQL, but the server's time-zone tables are not loaded: "
                "CONVERT_TZ returns NULL and those queries silently match nothing.",
                "Load them on the server: mariadb-tzinfo-to-sql /usr/share/zoneinfo | mariadb -u root mysql "
                "(MySQL: mysql_tzinfo_to_sql … | mysql -u root mysql), or set TIME_ZONE=UTC.",
            )
        ]
    return [ok(CHECK, f"Time-zone tables are loaded: the server converts {source} to {target}.")]
