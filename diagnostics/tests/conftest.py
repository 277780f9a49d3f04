"""Fixtures for diagnostics tests: real WSGI and faults for DB sessions; production config for the commands."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.checks import WARNING, CheckMessage
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import CommandError, call_command
from django.db import DEFAULT_DB_ALIAS, connection
from django.test import RequestFactory

from core.tests.proxy import TcpProxy


@dataclass
class WsgiResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WsgiDriver:
    """Serve requests through Django's real WSGI handler, as gunicorn does.

    Django's test client disconnects `close_old_connections` from the request signals, so a
    connection would never be health-checked or recycled between its requests; here both
    signals fire exactly as in production, on the test thread's persistent connection.
    """

    def __init__(self) -> None:
        self.handler = WSGIHandler()

    def get(self, path: str, headers: dict[str, str] | None = None, *, consume: bool = True) -> WsgiResponse:
        environ = RequestFactory().get(path, headers=headers or {}).environ
        captured: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info=None) -> None:
            captured["status"] = int(status.split()[0])
            captured["headers"] = dict(response_headers)

        result = self.handler(environ, start_response)
        try:
            body = b"".join(result) if consume else b""
        finally:
            result.close()  # fires request_finished, as a WSGI server does
        return WsgiResponse(captured["status"], captured["headers"], body)


class AsgiDriver:
    """Serve requests through Django's real ASGI handler, as uvicorn or daphne do.

    Sync views and middleware run where asgiref puts thread-sensitive code: on this (the test's)
    thread, so the request uses the test thread's persistent connection, as with WsgiDriver. The
    whole body is always sent: an ASGI server has no "closed unread".
    """

    def __init__(self) -> None:
        self.handler = ASGIHandler()

    def get(self, path: str, headers: dict[str, str] | None = None, *, consume: bool = True) -> WsgiResponse:
        return async_to_sync(self._get)(path, headers or {})

    async def _get(self, path: str, headers: dict[str, str]) -> WsgiResponse:
        path_only, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path_only,
            "raw_path": path_only.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"testserver")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        sent: list[dict[str, Any]] = []
        finished = asyncio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await finished.wait()  # the client stays until the response is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finished.set()

        await self.handler(scope, receive, send)
        start = next(message for message in sent if message["type"] == "http.response.start")
        body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
        response_headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in start["headers"]}
        return WsgiResponse(start["status"], response_headers, body)


@pytest.fixture(params=["wsgi", "asgi"])
def wsgi(request) -> WsgiDriver | AsgiDriver:
    """A server entry point: every request-path test runs through the WSGI and the ASGI one."""
    return WsgiDriver() if request.param == "wsgi" else AsgiDriver()


@pytest.fixture
def persistent_connection(transactional_db) -> Iterator[Any]:
    """Keep the connection open across requests (CONN_MAX_AGE > 0, health checks on)."""
    saved = {key: connection.settings_dict[key] for key in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS")}
    connection.settings_dict.update(CONN_MAX_AGE=300, CONN_HEALTH_CHECKS=True)
    connection.close()
    try:
        yield connection
    finally:
        connection.close()
        connection.settings_dict.update(saved)


class SecondConnection:
    """A connection of its own to the test database: sees only what was committed."""

    def __init__(self) -> None:
        settings = connection.settings_dict
        if connection.vendor == "mysql":
            import MySQLdb

            self.raw = MySQLdb.connect(
                host=settings["HOST"],
                port=int(settings["PORT"]),
                user=settings["USER"],
                password=settings["PASSWORD"],
                database=settings["NAME"],
                charset="utf8mb4",
                autocommit=True,
            )
        else:
            self.raw = sqlite3.connect(settings["NAME"], isolation_level=None)

    def scalar(self, sql: str, params: tuple = ()) -> Any:
        cursor = self.raw.cursor()
        try:
            cursor.execute(sql.replace("%s", "?") if connection.vendor == "sqlite" else sql, params)
            row = cursor.fetchone()
            return row[0] if row else None
        finally:
            cursor.close()

    def close(self) -> None:
        self.raw.close()


@pytest.fixture
def second_connection(transactional_db) -> Iterator[SecondConnection]:
    other = SecondConnection()
    try:
        yield other
    finally:
        other.close()


@pytest.fixture
def proxied_database(persistent_connection) -> Iterator[TcpProxy]:
    """Route this process's database connections through a proxy the test can cut."""
    settings = connection.settings_dict
    saved = {"HOST": settings["HOST"], "PORT": settings["PORT"]}
    proxy = TcpProxy((settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 3306)))
    settings.update(HOST="127.0.0.1", PORT=proxy.port)
    connection.close()
    try:
        yield proxy
    finally:
        connection.close()
        settings.update(saved)
        proxy.stop()


# --- check_production / fix_mysql ---------------------------------------------------

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


def by_id(results: list[CheckMessage]) -> dict[str, int]:
    """Return {id: level} of the check messages that are not ok (warnings and errors)."""
    return {result.id: result.level for result in results if result.level >= WARNING}


# What `check --database default` passes to each check: without it the database checks return nothing.
DEFAULT_DATABASE = [DEFAULT_DB_ALIAS]


def answers_a_query() -> bool:
    """Return True when the default connection runs a query and gets its answer (reconnecting if it must)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 6 * 7")
        return cursor.fetchone()[0] == 42


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


@contextmanager
def unreachable_database() -> Iterator[None]:
    """Point the default connection at a database nobody answers for, for the block."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    changes = (
        {"HOST": "127.0.0.1", "PORT": closed_port}
        if connection.vendor == "mysql"
        else {"NAME": "/nonexistent-directory/taskhub.sqlite3"}
    )
    with connection_settings(**changes):
        yield
