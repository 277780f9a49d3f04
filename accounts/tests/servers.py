"""Real server processes (gunicorn) against the test database, started and stopped by tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 90.0
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


@dataclass
class Server:
    process: subprocess.Popen
    log_path: Path
    port: int = 0
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log:
            self._log.close()


def server_env(jwt_secret: str, **extra: str) -> dict[str, str]:
    """Return the environment of a server process that serves the current test database."""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "TASKHUB_READ_DOTENV": "0",
        "TASKHUB_VAR_DIR": str(settings.VAR_DIR),
        "JWT_SECRET_KEY": jwt_secret,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        "LOG_LEVEL": "INFO",
        **extra,
    }
    if connection.vendor == "mysql":
        env.update(DATABASE_TYPE="mysql", MYSQL_DATABASE=db["NAME"])
    else:
        env.update(DATABASE_TYPE="sqlite", SQLITE_PATH=str(db["NAME"]))
    return env


def start_server(env: dict[str, str], log_path: Path) -> Server:
    """Start gunicorn on a free 127.0.0.1 port (bound as port 0); the caller must `stop()` it."""
    log = log_path.open("wb")
    command = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", "127.0.0.1:0"]
    command += ["--workers", "1", "--timeout", "60", "--graceful-timeout", "5", "--log-level", "info"]
    process = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Server(process=process, log_path=log_path, _log=log)


def wait_until_ready(server: Server) -> None:
    """Wait for the port to be announced and the app to answer; raise with the log if it never does."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
        if not server.port and (match := LISTENING.search(server.log())):
            server.port = int(match.group(1))
        if server.port:
            try:
                if request(server, "GET", "/api/auth/me/")[0] == 401:
                    return
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"server not ready after {START_DEADLINE_S}s:\n{server.log()}")


def request(
    server: Server, method: str, path: str, body: dict | None = None, token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """Send one request; return (status, headers, decoded JSON body)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")
