"""Register production checks with Django's system check framework, each behind the same guards.

A check body takes no arguments and returns check messages. The decorators turn it into a Django
check function (`app_configs`, `databases`, `**kwargs`) that `manage.py check --deploy` and
`check_production` both call, so the two run exactly the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import update_wrapper
from time import monotonic
from typing import Any, Protocol, cast

from django.apps import AppConfig
from django.core.checks import CheckMessage, Tags
from django.core.checks.registry import registry
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, transaction

from core.db.errors import describe_database_error
from diagnostics.checks.messages import error

# Every TaskHub production check carries it: `manage.py check --deploy --tag taskhub`.
TAG = "taskhub"
QUERY_FAILED = "diagnostics.E039"
# After one check has waited out the connect timeout, the others take its word for a while
# instead of each waiting again; a long-lived process tries afresh after that.
UNREACHABLE_FOR_SECONDS = 30.0
TARGET_SETTINGS = ("ENGINE", "HOST", "PORT", "NAME", "USER", "PASSWORD")
_unreachable_since: dict[tuple[Any, ...], float] = {}

CheckBody = Callable[[], list[CheckMessage]]


class ProductionCheck(Protocol):
    """A Django check function that knows the name its results are shown under."""

    check_name: str
    needs_database: bool

    def __call__(
        self, app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
    ) -> list[CheckMessage]: ...


def configuration_check(name: str, *, register: bool = True) -> Callable[[CheckBody], ProductionCheck]:
    """Make a settings-and-environment check a Django deployment check, tagged security like Django's own."""

    def decorator(body: CheckBody) -> ProductionCheck:
        check = _guarded(body, name, needs_database=False, mysql_only=False, gate=False)
        return _registered(check, Tags.security) if register else check

    return decorator


def database_check(
    name: str, *, mysql_only: bool = False, gate: bool = False, register: bool = True
) -> Callable[[CheckBody], ProductionCheck]:
    """Make a database check a Django deployment check that runs only when databases are asked for.

    `gate`: the check that connects; it reports an unreachable database once, for all of them.
    `register=False` is for checks that relay Django's own: Django runs the originals itself, so
    registering the relay would show each finding twice in `manage.py check --deploy`.
    """

    def decorator(body: CheckBody) -> ProductionCheck:
        check = _guarded(body, name, needs_database=True, mysql_only=mysql_only, gate=gate)
        return _registered(check, Tags.database) if register else check

    return decorator


def _registered(check: ProductionCheck, tag: str) -> ProductionCheck:
    return registry.register(check, TAG, tag, deploy=True)


def _guarded(body: CheckBody, name: str, *, needs_database: bool, mysql_only: bool, gate: bool) -> ProductionCheck:
    def check(
        app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
    ) -> list[CheckMessage]:
        if not needs_database:
            return body()
        # As Django's own database checks: only when asked for (`check --deploy --database default`).
        if not databases or DEFAULT_DB_ALIAS not in databases:
            return []
        # The DATABASE_TYPE check reports that the MySQL-only checks were left out.
        if mysql_only and connection.vendor != "mysql":
            return []
        if gate:
            return body()
        # Django runs checks in no fixed order, so each one looks for itself; the gate says why.
        if not _reachable():
            return []
        try:
            # A savepoint per check: a failed query must not poison the connection for the next check.
            with transaction.atomic():
                return body()
        except DatabaseError as exc:
            return [
                error(
                    name,
                    QUERY_FAILED,
                    f"{name}: the check could not run: {describe_database_error(exc)}.",
                    "Fix the database error above (privileges, missing tables: run manage.py migrate), then re-run.",
                )
            ]

    update_wrapper(check, body)
    # Django inspects the signature for **kwargs: it must see this function's, not the body's.
    del check.__wrapped__
    guarded = cast(ProductionCheck, check)
    guarded.check_name = name
    guarded.needs_database = needs_database
    return guarded


def _reachable() -> bool:
    if connection.connection is not None:
        return True
    target = tuple(connection.settings_dict.get(key) for key in TARGET_SETTINGS)
    since = _unreachable_since.get(target)
    if since is not None and monotonic() - since < UNREACHABLE_FOR_SECONDS:
        return False
    try:
        connection.ensure_connection()
    except DatabaseError:
        _unreachable_since[target] = monotonic()
        return False
    _unreachable_since.pop(target, None)
    return True
