"""gunicorn.conf.py, the systemd units and the nginx example: checked by the tools that read them."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from accounts.tests.servers import server_env
from diagnostics.tests import deploy_guide as guide
from diagnostics.tests.deploy_guide import BASE_DIR, DEPLOY_DIR, GUIDES

GUNICORN_CHECK = ".venv/bin/gunicorn --check-config -c gunicorn.conf.py config.wsgi"
UNITS = ("taskhub-web.service", "taskhub-worker@.service", "taskhub-bulk-actions.service")


def gunicorn_config(**environment: str) -> dict:
    """Load gunicorn.conf.py as gunicorn does, under the given GUNICORN_* variables."""
    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        return runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_gunicorn_check(**environment: str) -> subprocess.CompletedProcess:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), *GUNICORN_CHECK.split()[1:]]
    env = {**server_env(settings.JWT_SECRET_KEY), **environment}
    return subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120)


def test_gunicorn_accepts_the_configuration_with_the_guides_command():
    assert all(GUNICORN_CHECK in path.read_text() for path in GUIDES)
    result = run_gunicorn_check()
    assert result.returncode == 0, result.stderr
    # The check bites: a bad value makes it fail.
    assert run_gunicorn_check(GUNICORN_WORKERS="many").returncode != 0


def test_gunicorn_logs_the_request_id_and_outlives_nginx_keepalive():
    config = gunicorn_config(GUNICORN_WORKERS="3", GUNICORN_THREADS="5")
    assert (config["workers"], config["threads"], config["worker_class"]) == (3, 5, "gthread")
    assert "rid=%({x-request-id}o)s" in config["access_log_format"]
    nginx = (DEPLOY_DIR / "nginx.conf").read_text()
    nginx_keepalive = int(re.search(r"keepalive_timeout (\d+)s;", nginx).group(1))
    assert config["keepalive"] > nginx_keepalive
    stop = guide.unit_keys(DEPLOY_DIR / "taskhub-web.service")["Service"]["TimeoutStopSec"][0]
    assert config["graceful_timeout"] < int(stop), "systemd must not kill gunicorn while it drains"


def test_gunicorn_starts_with_an_empty_metrics_directory(tmp_path):
    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old")
    keep = tmp_path / "notes.txt"
    keep.write_text("not prometheus'")
    config = gunicorn_config(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    try:
        config["on_starting"](None)
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert not stale.exists() and keep.exists()


def test_systemd_units_verify(tmp_path):
    """systemd-analyze verify, on copies pointing at this checkout; without it, a parse of the keys."""
    for name in UNITS:
        (tmp_path / name).write_text(guide.localized_unit(DEPLOY_DIR / name, BASE_DIR))
        sections = guide.unit_keys(DEPLOY_DIR / name)
        assert {"Unit", "Service", "Install"} <= set(sections), name
        assert sections["Service"]["KillMode"] == ["mixed"] and sections["Service"]["User"] == ["taskhub"]
    if shutil.which("systemd-analyze") is None:
        reason = (
            "UNITS NOT VERIFIED: systemd-analyze is missing (only their keys were parsed). Install it with "
            "`apt-get install systemd` (scripts/ensure-test-tools does so in CI)."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "taskhub-web.service"),
            str(tmp_path / "taskhub-worker@1.service"),
            str(tmp_path / "taskhub-bulk-actions.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result


def test_units_run_commands_that_exist_with_flags_that_parse():
    for name in UNITS:
        service = guide.unit_keys(DEPLOY_DIR / name)["Service"]
        for line in service.get("ExecStartPre", []) + service["ExecStart"]:
            words = line.split()
            assert words[0].startswith(f"{guide.INSTALL_DIR}/.venv/bin/"), line
            if (arguments := guide.manage_py_arguments(words)) is not None:
                guide.parse_manage_py(arguments)
            else:
                assert words[1:] == GUNICORN_CHECK.replace("--check-config ", "").split()[1:], line


def test_worker_unit_gives_running_tasks_their_grace_before_killing():
    service = guide.unit_keys(DEPLOY_DIR / "taskhub-worker@.service")["Service"]
    assert int(service["TimeoutStopSec"][0]) > settings.TASKHUB_SHUTDOWN_GRACE_SECONDS
    assert service["KillSignal"] == ["SIGTERM"] and service["Restart"] == ["always"]


def test_bulk_actions_unit_runs_the_runner_in_a_loop_and_restarts_it():
    service = guide.unit_keys(DEPLOY_DIR / "taskhub-bulk-actions.service")["Service"]
    arguments = guide.manage_py_arguments(service["ExecStart"][0].split())
    assert arguments[0] == "run_bulk_actions" and "--once" not in arguments, arguments
    assert service["Restart"] == ["always"] and service["KillSignal"] == ["SIGTERM"]
    assert all("taskhub-bulk-actions" in path.read_text() for path in GUIDES)


def test_nginx_forwards_authorization_and_the_request_id_everywhere():
    text = (DEPLOY_DIR / "nginx.conf").read_text()
    https = text.split("listen 443")[1].split("\nserver {")[0]
    assert "proxy_set_header Authorization $http_authorization;" in https
    assert "proxy_set_header X-Request-ID $taskhub_request_id;" in https
    # Set at server level, so every location inherits them (a location's own proxy_set_header
    # would drop them all).
    assert all("proxy_set_header" not in location for location in https.split("\n    location ")[1:])
    assert re.search(r"client_max_body_size (\d+)m;", https).group(1) == "9"  # bulk: 8 MiB


def nginx_test_config(tmp_path: Path, *, upstream_port: int = 8000, https_port: int = 443, http_port: int = 80) -> Path:
    """Write deploy/nginx.conf, with a throw-away certificate and local paths, into a main config."""
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=tasks.example.com"]
        + ["-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    site = (DEPLOY_DIR / "nginx.conf").read_text()
    for old, new in (
        ("/etc/ssl/certs/tasks.example.com.pem", str(certificate)),
        ("/etc/ssl/private/tasks.example.com.key", str(key)),
        ("/var/log/nginx/", f"{tmp_path}/"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        ("listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
    ):
        assert old in site, old
        site = site.replace(old, new)
    (tmp_path / "taskhub.conf").write_text(site)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log {tmp_path}/access.log;\n"
        + "".join(
            f"  {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"  include {tmp_path}/taskhub.conf;\n}}\n"
    )
    return main


def require_nginx() -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None or shutil.which("openssl") is None:
        reason = "nginx (or openssl) is not installed: deploy/nginx.conf is not checked (scripts/ensure-test-tools)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return nginx


def test_nginx_accepts_the_configuration(tmp_path):
    nginx = require_nginx()
    result = subprocess.run(
        [nginx, "-t", "-c", str(nginx_test_config(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
