"""Fixtures for diagnostics tests: real WSGI and faults for DB sessions; production config for the commands."""

from __future__ import annotations

import json
import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.core.checks import WARNING, CheckMessage
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import CommandError, call_command
from django.db import DEFAULT_DB_ALIAS, connection
from django.test import RequestFactory


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


@pytest.fixture
def wsgi() -> WsgiDriver:
    return WsgiDriver()


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


class TcpProxy:
    """Forward a free 127.0.0.1 port to the database server until the test cuts it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._cut = threading.Event()
        self.resume()

    def resume(self) -> None:
        """Accept connections (again, on the same port: the database is back)."""
        self._cut.clear()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-db-proxy", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, like a database that went away."""
        self._cut.set()
        self.listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            for sock in self._sockets:
                _shut(sock)

    def stop(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._cut.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
                for source, sink in ((client, upstream), (upstream, client)):
                    thread = threading.Thread(target=_pump, args=(source, sink), daemon=True)
                    self._threads.append(thread)
                    thread.start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _shut(source)
        _shut(sink)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


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
