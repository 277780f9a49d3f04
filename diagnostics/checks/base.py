"""The shape of a production check and the registry `check_production` renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum

from django.db import connection


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class CheckResult:
    """One finding: `check` names what was looked at, `id` the problem (empty when ok)."""

    check: str
    status: Status
    message: str
    id: str = ""
    remedy: str = ""

    def as_dict(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}


def ok(check: str, message: str) -> CheckResult:
    """Return a passing result."""
    return CheckResult(check=check, status=Status.OK, message=message)


def warning(check: str, id: str, message: str, remedy: str) -> CheckResult:
    """Return a warning with its stable id and what to do."""
    return CheckResult(check=check, status=Status.WARNING, message=message, id=id, remedy=remedy)


def error(check: str, id: str, message: str, remedy: str) -> CheckResult:
    """Return an error with its stable id and what to do."""
    return CheckResult(check=check, status=Status.ERROR, message=message, id=id, remedy=remedy)


CheckFunction = Callable[[], list[CheckResult]]


@dataclass(frozen=True)
class ProductionCheck:
    name: str
    function: CheckFunction
    needs_database: bool
    mysql_only: bool
    # A gate that fails (e.g. cannot connect) makes the remaining database checks pointless.
    gate: bool = False
    # False for checks that only relay Django's own, so `check --deploy` does not show them twice.
    in_django_checks: bool = True

    def applies(self) -> bool:
        return not self.mysql_only or connection.vendor == "mysql"


REGISTRY: list[ProductionCheck] = []


def production_check(
    name: str,
    *,
    needs_database: bool = False,
    mysql_only: bool = False,
    gate: bool = False,
    in_django_checks: bool = True,
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check; they run in the order their modules register them."""

    def decorator(function: CheckFunction) -> CheckFunction:
        REGISTRY.append(
            ProductionCheck(name, function, needs_database or mysql_only, mysql_only, gate, in_django_checks)
        )
        return function

    return decorator
