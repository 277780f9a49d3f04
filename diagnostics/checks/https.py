"""HTTPS: the public protocol, and what Django needs to know behind a TLS-terminating proxy."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage

from diagnostics.checks.messages import ok, warning
from diagnostics.checks.registration import configuration_check

CHECK = "https"


@configuration_check(CHECK)
def check_https() -> list[CheckMessage]:
    """The public address is https, and Django can tell a proxied https request from plain http."""
    if settings.EXTERNAL_PROTOCOL != "https":
        return [
            warning(
                CHECK,
                "diagnostics.W020",
                "EXTERNAL_PROTOCOL is http: passwords and bearer tokens cross the network unencrypted.",
                "Terminate TLS (usually at the proxy) and set EXTERNAL_PROTOCOL=https; secure cookies, HSTS and "
                "the https redirect then follow.",
            )
        ]
    if not getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        return [
            warning(
                CHECK,
                "diagnostics.W021",
                "EXTERNAL_PROTOCOL is https but SECURE_PROXY_SSL_HEADER is not set: behind a TLS-terminating "
                "proxy every request looks like http, so the https redirect loops.",
                "Let config/settings.py set it (it does when EXTERNAL_PROTOCOL=https) and have the proxy send "
                "X-Forwarded-Proto.",
            )
        ]
    # Secure cookies, HSTS and the redirect are Django's security.W004/W008/W012/W016.
    return [ok(CHECK, "EXTERNAL_PROTOCOL=https and the proxy's X-Forwarded-Proto header is honoured.")]
