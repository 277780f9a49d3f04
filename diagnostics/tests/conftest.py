"""Fixtures for the diagnostics commands: a production-like configuration and command runners."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from diagnostics.checks.base import CheckResult, Status

# Random per run, so no assertion can pass by accident on a fixed string.
STRONG_JWT_KEY = secrets.token_urlsafe(48)
STRONG_DJANGO_KEY = secrets.token_urlsafe(60)
MYSQL_PASSWORD = f"Pw-{secrets.token_hex(12)}"


@pytest.fixture
def production(monkeypatch, settings):
    """Present a production configuration (https, strong keys, every variable set) to the checks."""
    environment = {
        "DATABASE_TYPE": "mysql",
        "MYSQL_HOST": "db.internal",
        "MYSQL_PORT": "3306",
        "MYSQL_USERNAME": "taskhub",
        "MYSQL_PASSWORD": MYSQL_PASSWORD,
        "MYSQL_DATABASE": "taskhub",
        "JWT_SECRET_KEY": STRONG_JWT_KEY,
        "DJANGO_SECRET_KEY": STRONG_DJANGO_KEY,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings.DEBUG = False
    settings.JWT_SECRET_KEY = STRONG_JWT_KEY
    settings.SECRET_KEY = STRONG_DJANGO_KEY
    settings.EXTERNAL_HOST = "tasks.example.com"
    settings.EXTERNAL_PORT = 443
    settings.EXTERNAL_PROTOCOL = "https"
    settings.FRONTEND_DOMAIN = "https://app.example.com"
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "tasks.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://tasks.example.com", "https://app.example.com"]
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_SSL_REDIRECT = True
    return settings


def run_command(name: str, *args: str) -> tuple[int, str]:
    """Run a management command; return its exit status and what it printed."""
    out = StringIO()
    try:
        call_command(name, *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


def check_production_json(*args: str) -> tuple[int, dict[str, Any]]:
    """Run check_production --json; return its exit status and the parsed document."""
    code, output = run_command("check_production", "--json", *args)
    return code, json.loads(output)


def problems(document: dict[str, Any]) -> dict[str, str]:
    """Return {id: status} of the results that are not ok."""
    return {result["id"]: result["status"] for result in document["results"] if result["status"] != "ok"}


def by_id(results: list[CheckResult]) -> dict[str, Status]:
    """Return {id: status} of the check results that are not ok."""
    return {result.id: result.status for result in results if result.status is not Status.OK}


def execute(sql: str, params: list | None = None) -> list[tuple]:
    """Run SQL on the test database's default connection and return its rows."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return list(cursor.fetchall()) if cursor.description else []


@contextmanager
def connection_settings(**changes: Any) -> Iterator[None]:
    """Reconnect the default connection with other settings (credentials, host) for the block."""
    saved = {key: connection.settings_dict.get(key) for key in changes}
    connection.close()
    connection.settings_dict.update(changes)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)
