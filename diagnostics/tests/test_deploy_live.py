"""The guides' curl checks, run for real: gunicorn with gunicorn.conf.py (and nginx when installed).

Each `curl` line of the guides runs as written, its address pointed at the server this test
started on a free port. The answers must be what the guides say they are.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from accounts.services import session_start
from accounts.tests.servers import Server, server_env, wait_until_ready
from diagnostics.tests import deploy_guide as guide
from diagnostics.tests.deploy_guide import BASE_DIR, GUIDES
from diagnostics.tests.test_deploy_files import nginx_test_config, require_nginx

LOCAL = "http://127.0.0.1:8000"
PUBLIC = "https://tasks.example.com"
METRICS_TOKEN = secrets.token_urlsafe(24)
WAIT_S = 60


def curl_commands() -> list[str]:
    return [command for command in guide.shell_commands(GUIDES[0]) if command.startswith("curl ")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_curl(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    assert shutil.which("curl"), "curl is needed to run the guides' checks"
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)


def parse_response(output: str) -> tuple[int, dict[str, str], str]:
    """Split `curl -i` output into status, headers (lower-case names) and body."""
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def documented_401() -> tuple[str, dict]:
    """Return the status line and JSON body the guides show for the invalid-token check."""
    (shown,) = [block for block in guide.fenced_blocks(GUIDES[0], "text") if block.startswith("HTTP/1.1 401")]
    return shown.splitlines()[0], json.loads(shown.strip().splitlines()[-1])


@pytest.fixture
def gunicorn(transactional_db, tmp_path) -> Iterator[Server]:
    """gunicorn started as the systemd unit starts it: `-c gunicorn.conf.py config.wsgi`."""
    env = server_env(
        settings.JWT_SECRET_KEY,
        GUNICORN_BIND="127.0.0.1:0",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        METRICS_TOKEN=METRICS_TOKEN,
        EXTERNAL_HOST="tasks.example.com",
    )
    log_path = tmp_path / "gunicorn.log"
    log = log_path.open("wb")
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "config.wsgi"]
    process = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process=process, log_path=log_path, _log=log)
    try:
        wait_until_ready(server)
        yield server
    finally:
        server.stop()


def curl_env(**extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "METRICS_TOKEN": METRICS_TOKEN, **extra}


def wait_for_log(server: Server, pattern: str) -> str:
    return wait_for_text(server.log, pattern)


def wait_for_text(read: Callable[[], str], pattern: str) -> str:
    """Wait for `pattern` in what `read` returns (a log written after the response was sent)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if match := re.search(pattern, read()):
            return match.group(0)
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in the log:\n{read()}")


def test_the_guides_curl_checks_answer_as_documented(gunicorn):
    commands = [c for c in curl_commands() if LOCAL in c]  # in the guide's order: /metrics counts the 401
    assert len(commands) == 4, commands  # the 401 check, /metrics, /health/, /health/live
    env = curl_env()
    for command in commands:
        result = run_curl(command.replace(LOCAL, gunicorn.url), env)
        assert result.returncode == 0, (command, result.stderr)
        if "/api/tasks/statistics" in command:
            check_invalid_token_answer(gunicorn, result.stdout)
        elif "/metrics" in command:
            assert "# TYPE taskhub_http_requests_total counter" in result.stdout, result.stdout[:500]
            assert re.search(
                r'taskhub_http_requests_total\{.*route="/api/tasks/statistics/\?".*status="401"', result.stdout
            )
        elif command.endswith("/health/"):
            checks = {name.split("(")[0]: state for name, state in json.loads(result.stdout).items()}
            assert checks == dict.fromkeys(("Database", "Cache", "Migrations"), "OK")
        elif command.endswith("/health/live"):
            assert json.loads(result.stdout) == {"status": "alive"}
        else:
            raise AssertionError(f"no expectation for {command}")


def check_invalid_token_answer(server: Server, output: str) -> None:
    status, headers, body = parse_response(output)
    status_line, shown_body = documented_401()
    assert status == int(status_line.split()[1]), output  # through nginx the line reads HTTP/2 401
    assert headers["content-type"] == "application/json"
    assert headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'
    assert json.loads(body) == shown_body
    request_id = headers["x-request-id"]
    # One id in gunicorn's access log and in the app's log line for the 401, as the guide says.
    wait_for_log(server, rf'"GET /api/tasks/statistics HTTP/1.1" 401 .* rid={request_id}')
    wait_for_log(server, rf"\[{request_id}\] ❌ Token验证失败: malformed token \(not a JWT\)")


def test_the_check_goes_red_when_the_server_answers_with_something_else(gunicorn):
    """The 401 check fails when the endpoint does not refuse the token (proving the check bites)."""
    (command,) = [c for c in curl_commands() if LOCAL in c and "statistics" in c]
    result = run_curl(command.replace(LOCAL, gunicorn.url).replace("/api/tasks/statistics", "/health/live"), curl_env())
    with pytest.raises(AssertionError):
        check_invalid_token_answer(gunicorn, result.stdout)


@pytest.fixture
def nginx(gunicorn, tmp_path) -> Iterator[int]:
    """nginx with deploy/nginx.conf in front of the test's gunicorn; yields its https port."""
    binary = require_nginx()
    https_port, http_port = free_port(), free_port()
    upstream = int(gunicorn.url.rsplit(":", 1)[1])
    (tmp_path / "nginx").mkdir()
    config = nginx_test_config(tmp_path / "nginx", upstream_port=upstream, https_port=https_port, http_port=http_port)
    process = subprocess.Popen([binary, "-c", str(config), "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode()
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", https_port)) == 0:
                    break
            time.sleep(0.1)
        yield https_port
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_through_nginx_authorization_and_the_request_id_reach_taskhub(gunicorn, nginx, staff):
    """The public-address check of the guides, through deploy/nginx.conf."""
    public = f"https://tasks.example.com:{nginx}"
    resolve = f"curl --insecure --resolve tasks.example.com:{nginx}:127.0.0.1 "
    (command,) = [c for c in curl_commands() if PUBLIC in c]
    result = run_curl(command.replace("curl ", resolve, 1).replace(PUBLIC, public), curl_env())
    check_invalid_token_answer(gunicorn, result.stdout)

    token = session_start(user=staff).access
    valid = f'{resolve}-s -i -H "Authorization: Bearer {token}" -H "X-Request-ID: guide-check-42" {public}/api/auth/me/'
    status, headers, body = parse_response(run_curl(valid, curl_env()).stdout)
    assert status == 200 and json.loads(body)["username"] == "staff"  # Authorization was forwarded
    assert headers["x-request-id"] == "guide-check-42"
    wait_for_log(gunicorn, r'"GET /api/auth/me/ HTTP/1.1" 200 .* rid=guide-check-42')
    access_log = Path(gunicorn.log_path).parent / "nginx" / "taskhub.access.log"
    wait_for_text(access_log.read_text, "rid=guide-check-42")  # nginx logs once the response is sent
