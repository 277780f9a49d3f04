"""Feed the production checks to Django's system check framework (`manage.py check --deploy`)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DEFAULT_DB_ALIAS

from diagnostics.checks import CheckResult, Status
from diagnostics.checks.runner import run_production_checks

TAG = "taskhub"


@register(Tags.security, TAG, deploy=True)
def check_configuration(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Settings and environment: secrets, variables, hosts, https."""
    return to_messages(run_production_checks(database=False, relayed=False))


@register(Tags.database, TAG, deploy=True)
def check_database(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The database checks, only when asked for (`check --deploy --database default`), as Django's own are."""
    if not databases or DEFAULT_DB_ALIAS not in databases:
        return []
    return to_messages(run_production_checks(configuration=False, relayed=False))


def to_messages(results: list[CheckResult]) -> list[CheckMessage]:
    """Turn problems into Django check messages (passing results have no place there)."""
    messages: list[CheckMessage] = []
    for result in results:
        if result.status is Status.OK:
            continue
        kind = Error if result.status is Status.ERROR else Warning
        messages.append(kind(result.message, hint=result.remedy, id=result.id))
    return messages
