"""Production checks: small functions returning results with stable ids (diagnostics.E001, …).

Importing this package registers them, in the order `check_production` prints them.
"""

# isort: off
from diagnostics.checks import (  # noqa: F401 — imported for their registrations, in display order
    secrets,
    variables,
    django_security,
    hosts,
    https,
    database,
    pending_migrations,
    schema,
    charsets,
    timezones,
    clock,
    fingerprints,
)

# isort: on
from diagnostics.checks.base import CheckResult, Status
from diagnostics.checks.runner import run_production_checks

__all__ = ["CheckResult", "Status", "run_production_checks"]
