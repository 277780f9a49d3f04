"""Django's own deployment security checks, relayed under their own ids rather than re-implemented.

Only check_production runs this relay: `manage.py check --deploy` shows Django's originals itself.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import ERROR, WARNING, CheckMessage
from django.core.checks.registry import registry

from diagnostics.checks.messages import error, ok, warning
from diagnostics.checks.registration import configuration_check

CHECK = "django.security"
# id → (what passing means, what to do when Django's message has no hint).
REUSED = {
    "security.W018": ("DEBUG is off.", "Set DEBUG=false (or leave it unset) on every production instance."),
    "security.W009": (
        "DJANGO_SECRET_KEY is long and varied enough.",
        "Set DJANGO_SECRET_KEY to a random string of 50+ characters.",
    ),
    "security.W020": ("ALLOWED_HOSTS is not empty.", "Set EXTERNAL_HOST."),
    "security.W004": ("HSTS is on.", "Set EXTERNAL_PROTOCOL=https (HSTS follows; tune it with SECURE_HSTS_SECONDS)."),
    "security.W008": ("Plain http requests are redirected to https.", "Set EXTERNAL_PROTOCOL=https."),
    "security.W012": ("The session cookie is https-only.", "Set EXTERNAL_PROTOCOL=https."),
    "security.W016": ("The CSRF cookie is https-only.", "Set EXTERNAL_PROTOCOL=https."),
}
# DEBUG on in production exposes settings and tracebacks to anyone: an error here, not a warning.
ESCALATED = frozenset({"security.W018"})
# HSTS for every subdomain and browser preload lists are a policy for the whole domain, not a
# fault of this deployment; `manage.py check --deploy` still shows them.
ADVISORY = frozenset({"security.W005", "security.W021"})


@configuration_check(CHECK, register=False)
def check_django_security() -> list[CheckMessage]:
    """Run Django's deployment security checks; list the reused ones that passed too."""
    silenced = set(settings.SILENCED_SYSTEM_CHECKS) | ADVISORY
    messages = [message for message in django_security_messages() if message.id not in silenced]
    fired = {message.id for message in messages}
    results = [ok(CHECK, passed) for id, (passed, _) in REUSED.items() if id not in fired and id not in silenced]
    problems = sorted((message for message in messages if message.level >= WARNING), key=_display_order)
    results.extend(_result(message) for message in problems)
    return results


def django_security_messages() -> list[CheckMessage]:
    """Return what Django's own `--deploy` security checks report for the current settings."""
    messages: list[CheckMessage] = []
    for function in registry.get_checks(include_deployment_checks=True):
        if function.__module__.startswith("django.core.checks.security"):
            messages.extend(function(app_configs=None, databases=None))
    return messages


def _display_order(message: CheckMessage) -> tuple[int, str]:
    # Django's registry is a set: without this the order would change with memory layout.
    reused = list(REUSED)
    return (reused.index(message.id) if message.id in REUSED else len(reused), message.id or "")


def _result(message: CheckMessage) -> CheckMessage:
    relay = error if message.id in ESCALATED or message.level >= ERROR else warning
    default_remedy = REUSED.get(message.id, ("", "See the Django deployment checklist."))[1]
    return relay(CHECK, message.id or "", str(message.msg), str(message.hint or default_remedy))
