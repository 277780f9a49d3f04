"""Render check messages as ✅/⚠️/❌ lines or JSON, with an exit code. Secrets are masked.

INFO (and DEBUG) messages are passing results; WARNING is a warning; ERROR and CRITICAL are errors.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from enum import StrEnum

from django.conf import settings
from django.core.checks import ERROR, WARNING, CheckMessage
from django.db import connections


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


ICONS = {Status.OK: "✅", Status.WARNING: "⚠️ ", Status.ERROR: "❌"}
EXIT_OK, EXIT_ERRORS, EXIT_WARNINGS = 0, 1, 2
MASK = "********"
# Shorter values would mask ordinary words; no check prints a secret in the first place.
MIN_MASKED_LENGTH = 4
SECRET_ENVIRONMENT = ("MYSQL_PASSWORD", "JWT_SECRET_KEY", "DJANGO_SECRET_KEY", "METRICS_TOKEN")


def status(message: CheckMessage) -> Status:
    """Return how check_production shows a message's level."""
    if message.level >= ERROR:
        return Status.ERROR
    if message.level >= WARNING:
        return Status.WARNING
    return Status.OK


def as_dict(message: CheckMessage) -> dict[str, str]:
    """Return a message as the JSON report shows it (`check` is the name carried in `obj`)."""
    return {
        "check": str(message.obj or ""),
        "status": status(message).value,
        "message": str(message.msg),
        "id": message.id or "",
        "remedy": str(message.hint or ""),
    }


def exit_code(results: list[CheckMessage], *, fail_on_warning: bool = False) -> int:
    """Return 1 if anything failed, 2 for warnings when they count as failures, else 0."""
    statuses = {status(result) for result in results}
    if Status.ERROR in statuses:
        return EXIT_ERRORS
    if fail_on_warning and Status.WARNING in statuses:
        return EXIT_WARNINGS
    return EXIT_OK


def summary(results: list[CheckMessage]) -> dict[str, int]:
    """Return how many results have each status."""
    counts = Counter(status(result) for result in results)
    return {each.value: counts.get(each, 0) for each in Status}


def render_text(results: list[CheckMessage]) -> str:
    """Return one line per result (problems with their id and, indented, what to do)."""
    lines = []
    for result in results:
        shown = status(result)
        if shown is Status.OK:
            lines.append(f"{ICONS[shown]} {result.msg}")
        else:
            lines.append(f"{ICONS[shown]} {result.id} {result.msg}")
            lines.append(f"   → {result.hint}")
    counts = summary(results)
    lines.append("")
    lines.append(f"{counts['ok']} ok, {counts['warning']} warning(s), {counts['error']} error(s).")
    return mask_secrets("\n".join(lines))


def render_json(results: list[CheckMessage], *, fail_on_warning: bool = False) -> str:
    """Return the results as a JSON document (see docs/OPERATIONS.md, "Production diagnostics")."""
    code = exit_code(results, fail_on_warning=fail_on_warning)
    document = {
        "ok": code == EXIT_OK,
        "exit_code": code,
        "summary": summary(results),
        "results": [{key: mask_secrets(value) for key, value in as_dict(result).items()} for result in results],
    }
    return json.dumps(document, ensure_ascii=False, indent=2)


def mask_secrets(text: str) -> str:
    """Replace every configured password, key and token in `text` (a safety net, not the policy)."""
    for secret in sorted(known_secrets(), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def known_secrets() -> set[str]:
    """Return the secret values this process knows of, from settings, connections and the environment."""
    values = {settings.SECRET_KEY, getattr(settings, "JWT_SECRET_KEY", ""), getattr(settings, "METRICS_TOKEN", "")}
    values.update(connections[alias].settings_dict.get("PASSWORD") or "" for alias in connections)
    values.update(os.environ.get(name, "") for name in SECRET_ENVIRONMENT)
    return {value for value in values if len(value) >= MIN_MASKED_LENGTH}
