"""Production checks: Django deployment checks with stable ids (diagnostics.E001, …), tagged "taskhub".

Importing this package registers them with Django. `check_production` runs them in the order below.
"""

from __future__ import annotations

from django.core.checks import CheckMessage
from django.db import DEFAULT_DB_ALIAS

from diagnostics.checks import (
    charsets,
    clock,
    database,
    django_security,
    fingerprints,
    hosts,
    https,
    pending_migrations,
    replica,
    schema,
    secrets,
    timezones,
    topology,
    variables,
)
from diagnostics.checks.registration import TAG, ProductionCheck

# Display order. All but the two relays of Django's own checks (django_security and
# check_strict_mode) are registered with Django; a test keeps this list and the registry equal.
CHECKS: tuple[ProductionCheck, ...] = (
    secrets.check_jwt_secret_key,
    secrets.check_django_secret_key,
    variables.check_database_type,
    variables.check_mysql_variables,
    django_security.check_django_security,
    hosts.check_hosts_and_origins,
    https.check_https,
    database.check_connection,
    database.check_server_version,
    database.check_strict_mode,
    database.check_session_variables,
    pending_migrations.check_migrations,
    schema.check_tables,
    charsets.check_charsets,
    charsets.check_engines,
    topology.check_primary_writable,
    topology.check_lock_probe,
    topology.check_claim_plan,
    replica.check_replica,
    replica.check_replica_cache,
    timezones.check_time_zone_tables,
    clock.check_clock_skew,
    fingerprints.check_key_fingerprints,
)


def run_production_checks() -> list[CheckMessage]:
    """Run every production check against the default database and return the findings in order."""
    databases = [DEFAULT_DB_ALIAS]
    return [message for check in CHECKS for message in check(app_configs=None, databases=databases)]


__all__ = ["CHECKS", "TAG", "run_production_checks"]
