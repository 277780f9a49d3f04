"""Settings come from the environment; secrets are never made up per process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]

DUMP = """
import json
from django.conf import settings
print(json.dumps({
    "DATABASES": settings.DATABASES,
    "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
    "CSRF_TRUSTED_ORIGINS": settings.CSRF_TRUSTED_ORIGINS,
    "CORS_ALLOWED_ORIGINS": settings.CORS_ALLOWED_ORIGINS,
    "SESSION_COOKIE_SECURE": getattr(settings, "SESSION_COOKIE_SECURE", False),
    "SECURE_HSTS_SECONDS": getattr(settings, "SECURE_HSTS_SECONDS", 0),
    "SECURE_PROXY_SSL_HEADER": getattr(settings, "SECURE_PROXY_SSL_HEADER", None),
    "SECRET_KEY": settings.SECRET_KEY,
    "JWT_SECRET_KEY": settings.JWT_SECRET_KEY,
    "SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"],
    "DATABASE_ROUTERS": settings.DATABASE_ROUTERS,
}, default=str))
"""

SECRETS = {"JWT_SECRET_KEY": "j" * 40, "DJANGO_SECRET_KEY": "d" * 50}


def run_settings(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Import config.settings in a fresh interpreter with only `env` (plus PATH) set."""
    full_env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "TASKHUB_VAR_DIR": str(tmp_path / "var"),
        "TASKHUB_READ_DOTENV": "0",
        **env,
    }
    code = "import django; django.setup()\n" + DUMP
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=full_env, capture_output=True, text=True, timeout=60
    )


def load(env: dict[str, str], tmp_path: Path) -> dict:
    proc = run_settings(env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_sqlite_is_the_default_with_wal_busy_timeout_and_immediate_transactions(tmp_path):
    db = load(SECRETS, tmp_path)["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "var" / "taskhub.sqlite3")
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert db["OPTIONS"]["timeout"] >= 5


def test_mysql_settings_come_from_the_environment(tmp_path):
    env = {
        **SECRETS,
        "DATABASE_TYPE": "mysql",
        "MYSQL_HOST": "db.internal",
        "MYSQL_PORT": "3307",
        "MYSQL_USERNAME": "taskhub",
        "MYSQL_PASSWORD": "s3cret",
        "MYSQL_DATABASE": "taskhub_prod",
        "MYSQL_WAIT_TIMEOUT": "600",
        "MYSQL_INTERACTIVE_TIMEOUT": "900",
    }
    db = load(env, tmp_path)["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.mysql"
    assert (db["HOST"], db["PORT"], db["USER"], db["PASSWORD"], db["NAME"]) == (
        "db.internal",
        3307,
        "taskhub",
        "s3cret",
        "taskhub_prod",
    )
    options = db["OPTIONS"]
    assert options["charset"] == "utf8mb4"
    assert options["isolation_level"] == "read committed"
    assert "wait_timeout=600" in options["init_command"]
    assert "interactive_timeout=900" in options["init_command"]
    assert "STRICT_TRANS_TABLES" in options["init_command"]
    assert db["CONN_HEALTH_CHECKS"] is True
    assert 0 < db["CONN_MAX_AGE"] < 600


def test_conn_max_age_must_stay_below_wait_timeout(tmp_path):
    proc = run_settings(
        {**SECRETS, "DATABASE_TYPE": "mysql", "MYSQL_WAIT_TIMEOUT": "30", "DB_CONN_MAX_AGE": "60"}, tmp_path
    )
    assert proc.returncode != 0
    assert "DB_CONN_MAX_AGE" in proc.stderr


def test_a_replica_url_adds_the_replica_alias_and_the_router(tmp_path):
    env = {
        **SECRETS,
        "DATABASE_TYPE": "mysql",
        "MYSQL_HOST": "db.internal",
        "MYSQL_DATABASE": "taskhub_prod",
        "MYSQL_WAIT_TIMEOUT": "600",
        "DATABASE_REPLICA_URL": "mysql://reader:p%40ss@replica.internal:3308/taskhub_prod",
    }
    loaded = load(env, tmp_path)
    primary, replica = loaded["DATABASES"]["default"], loaded["DATABASES"]["replica"]
    assert (replica["HOST"], replica["PORT"], replica["USER"], replica["PASSWORD"], replica["NAME"]) == (
        "replica.internal",
        3308,
        "reader",
        "p@ss",
        "taskhub_prod",
    )
    # The primary's session set-up, and no test database of its own (tests mirror the primary).
    assert replica["OPTIONS"] == primary["OPTIONS"]
    assert replica["TEST"]["MIRROR"] == "default"
    assert loaded["DATABASE_ROUTERS"] == ["core.db.replica.ReplicaRouter"]


def test_no_replica_means_no_router(tmp_path):
    loaded = load(SECRETS, tmp_path)
    assert "replica" not in loaded["DATABASES"]
    assert loaded["DATABASE_ROUTERS"] == []


def test_a_replica_of_another_kind_of_database_is_refused(tmp_path):
    proc = run_settings({**SECRETS, "DATABASE_REPLICA_URL": "mysql://reader@replica.internal/taskhub"}, tmp_path)
    assert proc.returncode != 0
    assert "DATABASE_REPLICA_URL must name the same kind of database as the primary" in proc.stderr


def test_unknown_database_type_is_refused(tmp_path):
    proc = run_settings({**SECRETS, "DATABASE_TYPE": "postgres"}, tmp_path)
    assert proc.returncode != 0
    assert "DATABASE_TYPE must be 'sqlite' or 'mysql'" in proc.stderr


@pytest.mark.parametrize("missing", ["JWT_SECRET_KEY", "DJANGO_SECRET_KEY"])
def test_production_refuses_to_start_without_a_secret(tmp_path, missing):
    env = {k: v for k, v in SECRETS.items() if k != missing}
    proc = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={"PATH": os.environ["PATH"], "TASKHUB_VAR_DIR": str(tmp_path), "TASKHUB_READ_DOTENV": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], "one line, no traceback"
    assert f"{missing} is not set" in proc.stderr
    assert not (tmp_path / missing.lower()).exists()


def test_debug_key_is_created_once_and_reused_across_processes(tmp_path):
    first = load({"DEBUG": "1"}, tmp_path)
    second = load({"DEBUG": "1"}, tmp_path)
    assert first["JWT_SECRET_KEY"] == second["JWT_SECRET_KEY"]
    assert first["SECRET_KEY"] == second["SECRET_KEY"]
    assert first["JWT_SECRET_KEY"] != first["SECRET_KEY"]
    assert first["SIGNING_KEY"] == first["JWT_SECRET_KEY"]
    key_file = tmp_path / "var" / "jwt_secret_key"
    assert key_file.read_text() == first["JWT_SECRET_KEY"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first["JWT_SECRET_KEY"]) >= 32


def test_an_explicit_key_wins_over_the_persisted_one(tmp_path):
    load({"DEBUG": "1"}, tmp_path)
    explicit = load({"DEBUG": "1", "JWT_SECRET_KEY": "x" * 40}, tmp_path)
    assert explicit["JWT_SECRET_KEY"] == "x" * 40


def test_external_address_feeds_hosts_origins_and_cors(tmp_path):
    env = {
        **SECRETS,
        "EXTERNAL_HOST": "tasks.example.com",
        "EXTERNAL_PORT": "8443",
        "EXTERNAL_PROTOCOL": "https",
        "FRONTEND_DOMAIN": "app.example.com",
    }
    loaded = load(env, tmp_path)
    assert "tasks.example.com" in loaded["ALLOWED_HOSTS"]
    assert loaded["CSRF_TRUSTED_ORIGINS"] == ["https://tasks.example.com:8443", "https://app.example.com"]
    assert loaded["CORS_ALLOWED_ORIGINS"] == ["https://app.example.com"]
    assert loaded["SESSION_COOKIE_SECURE"] is True
    assert loaded["SECURE_HSTS_SECONDS"] > 0
    assert loaded["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_plain_http_keeps_cookies_insecure_and_omits_default_port(tmp_path):
    loaded = load({**SECRETS, "EXTERNAL_HOST": "tasks.local", "EXTERNAL_PORT": "80"}, tmp_path)
    assert loaded["CSRF_TRUSTED_ORIGINS"] == ["http://tasks.local"]
    assert loaded["SESSION_COOKIE_SECURE"] is False
    assert loaded["CORS_ALLOWED_ORIGINS"] == []


def test_bad_protocol_is_refused(tmp_path):
    proc = run_settings({**SECRETS, "EXTERNAL_PROTOCOL": "ftp"}, tmp_path)
    assert proc.returncode != 0
    assert "EXTERNAL_PROTOCOL" in proc.stderr


def test_an_unknown_sql_mode_name_is_refused_at_start_up(tmp_path):
    proc = run_settings(
        {**SECRETS, "DATABASE_TYPE": "mysql", "MYSQL_SQL_MODE": "STRICT_TRANS_TABLES,NO_ZERO_DATES"}, tmp_path
    )
    assert proc.returncode != 0
    assert "MYSQL_SQL_MODE names unknown modes 'NO_ZERO_DATES'" in proc.stderr


def test_known_sql_mode_names_are_accepted_in_any_case(tmp_path):
    env = {**SECRETS, "DATABASE_TYPE": "mysql", "MYSQL_SQL_MODE": "strict_trans_tables, NO_ENGINE_SUBSTITUTION"}
    assert "strict_trans_tables" in load(env, tmp_path)["DATABASES"]["default"]["OPTIONS"]["init_command"]
