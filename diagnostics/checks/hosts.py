"""ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS and CORS agree with EXTERNAL_* and FRONTEND_DOMAIN."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.checks import CheckMessage
from django.http.request import validate_host

from diagnostics.checks.messages import error, ok, warning
from diagnostics.checks.registration import configuration_check

CHECK = "hosts"
DEFAULT_PORTS = {"http": 80, "https": 443}


def external_origin() -> str | None:
    """Return the public origin EXTERNAL_HOST/PORT/PROTOCOL describe (as config/settings.py derives it)."""
    if not settings.EXTERNAL_HOST:
        return None
    protocol = settings.EXTERNAL_PROTOCOL
    port = settings.EXTERNAL_PORT
    suffix = f":{port}" if port and port != DEFAULT_PORTS.get(protocol) else ""
    return f"{protocol}://{settings.EXTERNAL_HOST}{suffix}"


def frontend_origins() -> list[str]:
    """Return the origins FRONTEND_DOMAIN names (bare hosts take the external protocol)."""
    origins = []
    for value in settings.FRONTEND_DOMAIN.split(","):
        value = value.strip().rstrip("/")
        if value:
            origins.append(value if "://" in value else f"{settings.EXTERNAL_PROTOCOL}://{value}")
    return origins


@configuration_check(CHECK)
def check_hosts_and_origins() -> list[CheckMessage]:
    """The public host is allowed, its origin trusted for CSRF, and the SPA's origins allowed by CORS."""
    origin = external_origin()
    results = _external_problems(origin) + _frontend_problems()
    if results:
        return results
    frontend = ", ".join(frontend_origins())
    return [
        ok(
            CHECK,
            f"ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS and CORS agree with EXTERNAL_* ({origin}) "
            f"and FRONTEND_DOMAIN ({frontend}).",
        )
    ]


def _external_problems(origin: str | None) -> list[CheckMessage]:
    if origin is None:
        return [
            error(
                CHECK,
                "diagnostics.E010",
                "EXTERNAL_HOST is not set: ALLOWED_HOSTS only admits localhost, so requests by the public "
                "name are refused with 400, and no origin is trusted for CSRF.",
                "Set EXTERNAL_HOST (and EXTERNAL_PORT, EXTERNAL_PROTOCOL) to the address clients use.",
            )
        ]
    problems = []
    if "*" in settings.ALLOWED_HOSTS:
        problems.append(
            warning(
                CHECK,
                "diagnostics.W011",
                "ALLOWED_HOSTS contains '*': any Host header is accepted (host-header poisoning).",
                "Remove '*'; EXTERNAL_HOST and EXTRA_ALLOWED_HOSTS are added to ALLOWED_HOSTS for you.",
            )
        )
    elif not validate_host(settings.EXTERNAL_HOST, settings.ALLOWED_HOSTS):
        problems.append(
            error(
                CHECK,
                "diagnostics.E011",
                f"ALLOWED_HOSTS does not admit EXTERNAL_HOST {settings.EXTERNAL_HOST!r}: requests by that name "
                "are refused with 400.",
                "Let config/settings.py derive ALLOWED_HOSTS from EXTERNAL_HOST (do not override it).",
            )
        )
    if not _origin_trusted(origin, settings.CSRF_TRUSTED_ORIGINS):
        problems.append(
            error(
                CHECK,
                "diagnostics.E012",
                f"CSRF_TRUSTED_ORIGINS does not contain the public origin {origin}: the admin's forms fail "
                "with 403 behind the proxy.",
                "Check EXTERNAL_HOST, EXTERNAL_PORT and EXTERNAL_PROTOCOL; CSRF_TRUSTED_ORIGINS is derived from them.",
            )
        )
    return problems


def _frontend_problems() -> list[CheckMessage]:
    if getattr(settings, "CORS_ALLOW_ALL_ORIGINS", False):
        return [
            warning(
                CHECK,
                "diagnostics.W013",
                "CORS_ALLOW_ALL_ORIGINS is on: any web site may call the API from a browser.",
                "Turn it off and list the SPA's origin in FRONTEND_DOMAIN.",
            )
        ]
    origins = frontend_origins()
    if not origins:
        return [
            warning(
                CHECK,
                "diagnostics.W010",
                "FRONTEND_DOMAIN is not set: CORS admits no browser origin, so a front end served from "
                "another origin cannot call the API.",
                "Set FRONTEND_DOMAIN to the SPA's origin (e.g. https://app.example.com); leave it empty only "
                "if the front end is served from EXTERNAL_HOST itself.",
            )
        ]
    problems = []
    missing = [origin for origin in origins if not _cors_allows(origin)]
    if missing:
        problems.append(
            error(
                CHECK,
                "diagnostics.E013",
                f"CORS_ALLOWED_ORIGINS does not contain {', '.join(missing)} from FRONTEND_DOMAIN: browsers "
                "refuse the SPA's API calls.",
                "Let config/settings.py derive CORS_ALLOWED_ORIGINS from FRONTEND_DOMAIN (do not override it).",
            )
        )
    insecure = [origin for origin in origins if origin.startswith("http://")]
    if settings.EXTERNAL_PROTOCOL == "https" and insecure:
        problems.append(
            warning(
                CHECK,
                "diagnostics.W012",
                f"FRONTEND_DOMAIN {', '.join(insecure)} is plain http while the API is https: tokens leave "
                "the browser unencrypted from that page.",
                "Serve the front end over https and write its origin with https:// in FRONTEND_DOMAIN.",
            )
        )
    return problems


def _origin_trusted(origin: str, trusted: list[str]) -> bool:
    """Return True if `origin` is listed, exactly or under a `scheme://*.domain` wildcard."""
    scheme, _, host = origin.partition("://")
    for entry in trusted:
        if entry == origin:
            return True
        entry_scheme, _, entry_host = entry.partition("://")
        if entry_scheme == scheme and entry_host.startswith("*.") and host.endswith(entry_host[1:]):
            return True
    return False


def _cors_allows(origin: str) -> bool:
    if origin in getattr(settings, "CORS_ALLOWED_ORIGINS", []):
        return True
    return any(re.match(pattern, origin) for pattern in getattr(settings, "CORS_ALLOWED_ORIGIN_REGEXES", []))
