"""JWT_SECRET_KEY and DJANGO_SECRET_KEY: set, long enough, not a placeholder. Never printed."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core.checks import CheckMessage

from accounts.fingerprint import key_fingerprint
from diagnostics.checks.messages import error, ok, warning
from diagnostics.checks.registration import configuration_check

JWT_MIN_LENGTH = 32
# A random key has dozens of distinct characters; "secretsecret…" or "aaaa…" has a handful.
MIN_DISTINCT_CHARACTERS = 10
# Compared after lower-casing and dropping everything but letters and digits.
WELL_KNOWN_VALUES = frozenset(
    {
        "secret",
        "secretkey",
        "changeme",
        "password",
        "jwtsecret",
        "jwtsecretkey",
        "djangosecretkey",
        "yoursecretkey",
        "mysecretkey",
        "mysecret",
        "default",
        "insecure",
        "test",
        "dev",
    }
)

REMEDY_NEW_KEY = (
    'Generate one with `python -c "import secrets; print(secrets.token_urlsafe(48))"` and set it in the '
    "environment or .env of every instance and worker (the same value everywhere)."
)


@configuration_check("secrets.jwt")
def check_jwt_secret_key() -> list[CheckMessage]:
    """JWT_SECRET_KEY comes from the environment, has 32+ characters and is not a placeholder."""
    check = "secrets.jwt"
    key = settings.JWT_SECRET_KEY
    if not os.environ.get("JWT_SECRET_KEY"):
        return [
            error(
                check,
                "diagnostics.E001",
                "JWT_SECRET_KEY is not set in the environment: this process signs tokens with a development "
                "key from var/ that other instances and workers do not share.",
                REMEDY_NEW_KEY,
            )
        ]
    if len(key) < JWT_MIN_LENGTH:
        return [
            error(
                check,
                "diagnostics.E001",
                f"JWT_SECRET_KEY is only {len(key)} characters long; at least {JWT_MIN_LENGTH} are needed.",
                REMEDY_NEW_KEY,
            )
        ]
    if is_placeholder(key):
        return [
            error(
                check,
                "diagnostics.E002",
                "JWT_SECRET_KEY is a placeholder or well-known value (e.g. the one in .env.example): anyone can "
                "forge tokens.",
                REMEDY_NEW_KEY,
            )
        ]
    return [ok(check, f"JWT_SECRET_KEY is set, {len(key)} characters, not a placeholder (kid {key_fingerprint(key)}).")]


@configuration_check("secrets.django")
def check_django_secret_key() -> list[CheckMessage]:
    """DJANGO_SECRET_KEY comes from the environment, is not a placeholder and differs from the JWT key."""
    check = "secrets.django"
    key = settings.SECRET_KEY
    if not os.environ.get("DJANGO_SECRET_KEY"):
        return [
            error(
                check,
                "diagnostics.E003",
                "DJANGO_SECRET_KEY is not set in the environment: this process uses a development key from var/.",
                REMEDY_NEW_KEY,
            )
        ]
    if is_placeholder(key):
        return [
            error(
                check,
                "diagnostics.E003",
                "DJANGO_SECRET_KEY is a placeholder or well-known value (e.g. the one in .env.example).",
                REMEDY_NEW_KEY,
            )
        ]
    if key == settings.JWT_SECRET_KEY:
        return [
            warning(
                check,
                "diagnostics.W001",
                "DJANGO_SECRET_KEY and JWT_SECRET_KEY are the same value.",
                "Use two different random strings, so rotating one does not invalidate the other.",
            )
        ]
    # Its length and variety are Django's own security.W009 (reported with the security checks).
    return [ok(check, "DJANGO_SECRET_KEY is set, not a placeholder, and differs from JWT_SECRET_KEY.")]


def is_placeholder(value: str) -> bool:
    """Return True for example, well-known or low-variety values that must never sign anything."""
    normalized = re.sub(r"[^a-z0-9]", "", value.lower())
    return (
        value.strip() in example_values()
        or normalized in WELL_KNOWN_VALUES
        or "changeme" in normalized
        or len(set(value)) < MIN_DISTINCT_CHARACTERS
    )


@cache
def example_values(path: Path | None = None) -> frozenset[str]:
    """Return the secret values shipped in .env.example (they are public, so never valid)."""
    path = path or Path(settings.BASE_DIR) / ".env.example"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return frozenset()
    values = set()
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip().endswith("SECRET_KEY") and value.strip():
            values.add(value.strip().strip("\"'"))
    return frozenset(values)
