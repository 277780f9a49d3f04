"""The findings a production check returns: Django check messages that name the check in `obj`."""

from __future__ import annotations

from django.core import checks
from django.core.checks import CheckMessage


def ok(check: str, message: str) -> CheckMessage:
    """Return a passing result: ✅ in check_production, INFO in `manage.py check --deploy`."""
    return checks.Info(message, obj=check)


def warning(check: str, id: str, message: str, remedy: str) -> CheckMessage:
    """Return a warning with its stable id and what to do."""
    return checks.Warning(message, hint=remedy, obj=check, id=id)


def error(check: str, id: str, message: str, remedy: str) -> CheckMessage:
    """Return an error with its stable id and what to do."""
    return checks.Error(message, hint=remedy, obj=check, id=id)
