"""manage.py check_production end to end: exit codes, text and JSON output, secrets never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from diagnostics.checks import CHECKS
from diagnostics.tests.conftest import (
    MYSQL_PASSWORD,
    STRONG_DJANGO_KEY,
    STRONG_JWT_KEY,
    check_production_json,
    connection_settings,
    execute,
    problems,
    run_command,
    unreachable_database,
)

mysql = pytest.mark.mysql
BASE_DIR = settings.BASE_DIR


@mysql
@pytest.mark.django_db
def test_a_clean_production_configuration_passes_every_check(production):
    code, document = check_production_json("--fail-on-warning")
    assert code == 0, problems(document)
    assert document["ok"] is True
    assert document["summary"] == {"ok": len(document["results"]), "warning": 0, "error": 0}
    assert {result["check"] for result in document["results"]} == {check.check_name for check in CHECKS}


@mysql
@pytest.mark.django_db
def test_the_text_output_has_one_line_per_check_and_a_summary(production):
    code, output = run_command("check_production")
    assert code == 0
    assert "✅ DATABASE_TYPE=mysql." in output
    assert "✅ DEBUG is off." in output
    assert output.rstrip().endswith("0 warning(s), 0 error(s).")
    assert "❌" not in output and "⚠️" not in output


@mysql
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("breakage", "expected_id"),
    [
        (lambda settings, env: setattr(settings, "JWT_SECRET_KEY", "too-short-key"), "diagnostics.E001"),
        (
            lambda settings, env: setattr(settings, "JWT_SECRET_KEY", "change-me-to-a-long-random-string"),
            "diagnostics.E002",
        ),
        (lambda settings, env: setattr(settings, "DEBUG", True), "security.W018"),
        (lambda settings, env: env.delenv("MYSQL_HOST"), "diagnostics.E005"),
        (lambda settings, env: setattr(settings, "EXTERNAL_HOST", ""), "diagnostics.E010"),
    ],
    ids=["short-secret", "placeholder-secret", "debug-on", "missing-mysql-host", "no-external-host"],
)
def test_each_broken_setting_is_an_error_with_exit_status_1(production, monkeypatch, breakage, expected_id):
    breakage(production, monkeypatch)
    code, document = check_production_json()
    assert code == 1
    assert problems(document) == {expected_id: "error"}
    text_code, output = run_command("check_production")
    assert text_code == 1
    assert f"❌ {expected_id} " in output


@mysql
@pytest.mark.django_db
def test_warnings_exit_0_unless_fail_on_warning_then_2(production):
    production.FRONTEND_DOMAIN = ""
    code, document = check_production_json()
    assert (code, problems(document)) == (0, {"diagnostics.W010": "warning"})
    code, document = check_production_json("--fail-on-warning")
    assert (code, document["ok"], document["exit_code"]) == (2, False, 2)


@mysql
@pytest.mark.django_db(transaction=True)
def test_the_password_and_keys_never_appear_in_text_or_json_output(production):
    """Connect with a real password-protected account, then with a wrong password: neither is printed."""
    user = "taskhub_diag_pw"
    execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", [MYSQL_PASSWORD])
    try:
        execute(f"GRANT ALL PRIVILEGES ON `{connection.settings_dict['NAME']}`.* TO '{user}'@'%%'")
        outputs = []
        with connection_settings(USER=user, PASSWORD=MYSQL_PASSWORD):
            code, document = check_production_json()
            outputs += [str(document), run_command("check_production")[1]]
            assert code == 0, problems(document)
        wrong = MYSQL_PASSWORD + "-wrong"
        with connection_settings(USER=user, PASSWORD=wrong):
            code, document = check_production_json()
            outputs += [str(document), run_command("check_production")[1]]
            assert problems(document) == {"diagnostics.E030": "error"}
            assert "Access denied" in str(document)
    finally:
        execute(f"DROP USER IF EXISTS '{user}'@'%%'")
    for output in outputs:
        for secret in (MYSQL_PASSWORD, wrong, STRONG_JWT_KEY, STRONG_DJANGO_KEY):
            assert secret not in output


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_is_reported_and_the_other_database_checks_are_skipped(production):
    with unreachable_database():
        code, document = check_production_json()
    assert code == 1
    statuses = problems(document)
    assert statuses["diagnostics.E030"] == "error"
    database_checks = {check.check_name for check in CHECKS if check.needs_database}
    ran = {result["check"] for result in document["results"]}
    assert ran & database_checks == {"database.connection"}
    assert "secrets.jwt" in ran  # configuration checks still ran


@pytest.mark.sqlite
@pytest.mark.django_db
def test_on_sqlite_it_is_an_error_but_the_checks_that_apply_still_run(production):
    code, document = check_production_json()
    assert code == 1
    assert problems(document) == {"diagnostics.E004": "error"}
    ran = {result["check"] for result in document["results"]}
    assert {"database.connection", "migrations", "schema.tables", "fingerprints", "secrets.jwt"} <= ran
    assert not ran & {"database.version", "database.session", "schema.charsets", "database.clock"}


@pytest.mark.django_db
def test_check_deploy_runs_the_configuration_checks_through_djangos_framework(production):
    production.JWT_SECRET_KEY = "too-short-key"
    production.FRONTEND_DOMAIN = ""
    production.DEBUG = True
    with pytest.raises(SystemCheckError) as caught:
        call_command("check", "--deploy")
    output = str(caught.value)
    assert "(diagnostics.E001)" in output
    assert "(diagnostics.W010)" in output
    # Django reports DEBUG itself; the relayed copy stays in check_production.
    assert output.count("(security.W018)") == 1


@pytest.mark.django_db
def test_plain_check_does_not_run_the_production_checks(production):
    production.JWT_SECRET_KEY = "too-short-key"
    shown = StringIO()
    call_command("check", "--fail-level", "WARNING", stdout=shown, stderr=shown)  # raises on any warning
    assert "diagnostics.E001" not in shown.getvalue()
    assert "System check identified no issues" in shown.getvalue()
    with pytest.raises(SystemCheckError, match=r"diagnostics\.E001"):
        call_command("check", "--deploy")  # the same configuration, with the production checks


@mysql
@pytest.mark.django_db
def test_the_command_line_exit_status_is_0_then_2_with_fail_on_warning(tmp_path):
    """A real process with a production environment whose only flaws are warnings (root, no password)."""
    settings_dict = connection.settings_dict
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "TASKHUB_READ_DOTENV": "0",
        "TASKHUB_VAR_DIR": str(tmp_path),
        "DATABASE_TYPE": "mysql",
        "MYSQL_HOST": settings_dict["HOST"],
        "MYSQL_PORT": str(settings_dict["PORT"]),
        "MYSQL_USERNAME": settings_dict["USER"],
        "MYSQL_PASSWORD": settings_dict["PASSWORD"],
        "MYSQL_DATABASE": settings_dict["NAME"],
        "JWT_SECRET_KEY": STRONG_JWT_KEY,
        "DJANGO_SECRET_KEY": STRONG_DJANGO_KEY,
        "EXTERNAL_HOST": "tasks.example.com",
        "EXTERNAL_PROTOCOL": "https",
        "FRONTEND_DOMAIN": "https://app.example.com",
    }
    command = [sys.executable, "manage.py", "check_production"]
    relaxed = subprocess.run(command, env=environment, cwd=BASE_DIR, capture_output=True, text=True, timeout=120)
    strict = subprocess.run(
        [*command, "--fail-on-warning"], env=environment, cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )
    expected = {"diagnostics.W004"} | ({"diagnostics.W002"} if not settings_dict["PASSWORD"] else set())
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert {line.split()[1] for line in relaxed.stdout.splitlines() if line.startswith("⚠️")} == expected
    assert "❌" not in relaxed.stdout
    assert strict.returncode == 2, strict.stdout + strict.stderr
    assert "not ready for production: 0 error(s)" in strict.stderr
