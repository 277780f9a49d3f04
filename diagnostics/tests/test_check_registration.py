"""The production checks are Django's: `manage.py check --deploy` and check_production agree."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.core.checks import WARNING, CheckMessage, Tags
from django.core.checks.registry import registry
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone

from accounts.fingerprint import key_fingerprint
from diagnostics.checks import CHECKS, TAG, database, django_security
from diagnostics.checks.django_security import ADVISORY
from diagnostics.models import InstanceFingerprint
from diagnostics.tests.conftest import DEFAULT_DATABASE, check_production_json, problems, unreachable_database

mysql = pytest.mark.mysql


def check_deploy(*, tags: list[str] | None = None) -> list[CheckMessage]:
    """Return what `manage.py check --deploy --database default` reports (its silenced ids left out)."""
    messages = registry.run_checks(tags=tags, include_deployment_checks=True, databases=DEFAULT_DATABASE)
    return [message for message in messages if not message.is_silenced()]


def problem_ids(messages: list[CheckMessage]) -> set[str]:
    return {message.id for message in messages if message.level >= WARNING}


def another_instance_signs_with_another_key() -> None:
    InstanceFingerprint.objects.create(
        hostname="web-2",
        pid=4242,
        role="web",
        key_fingerprint=key_fingerprint("another-key-some-instance-was-started-with-0123456789"),
        last_seen_at=timezone.now() - timedelta(minutes=1),
    )


BREAKAGES = {
    "short-secret": lambda settings, env: setattr(settings, "JWT_SECRET_KEY", "too-short-key"),
    "debug-on": lambda settings, env: setattr(settings, "DEBUG", True),
    "insecure-session-cookie": lambda settings, env: setattr(settings, "SESSION_COOKIE_SECURE", False),
    "missing-mysql-host": lambda settings, env: env.delenv("MYSQL_HOST"),
    "no-external-host": lambda settings, env: setattr(settings, "EXTERNAL_HOST", ""),
    "no-frontend-domain": lambda settings, env: setattr(settings, "FRONTEND_DOMAIN", ""),
    "plain-http": lambda settings, env: setattr(settings, "EXTERNAL_PROTOCOL", "http"),
    "another-key-elsewhere": lambda settings, env: another_instance_signs_with_another_key(),
}


def test_every_check_check_production_runs_is_registered_with_django_except_the_relays():
    registered = {check for check in registry.get_checks(include_deployment_checks=True) if TAG in check.tags}
    relays = {django_security.check_django_security, database.check_strict_mode}
    assert registered == set(CHECKS) - relays
    assert relays <= set(CHECKS)
    assert not relays & set(registry.get_checks(include_deployment_checks=True))
    assert len(CHECKS) == len(set(CHECKS))


def test_database_checks_are_tagged_database_and_configuration_checks_security():
    for check in set(CHECKS) & set(registry.get_checks(include_deployment_checks=True)):
        assert set(check.tags) == {TAG, Tags.database if check.needs_database else Tags.security}, check


@pytest.mark.django_db
@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_check_deploy_and_check_production_report_the_same_problems(production, monkeypatch, breakage):
    breakage(production, monkeypatch)
    _, document = check_production_json()
    # Django's HSTS subdomain/preload advice is deliberately left to check --deploy.
    assert problem_ids(check_deploy()) - ADVISORY == set(problems(document))
    assert problems(document)  # each breakage is a problem, so the comparison is not of two empty sets


@pytest.mark.django_db
def test_the_database_checks_run_under_check_deploy_only_when_a_database_is_given(production):
    another_instance_signs_with_another_key()
    messages = registry.run_checks(tags=[TAG], include_deployment_checks=True, databases=None)
    assert "diagnostics.E080" not in problem_ids(messages)
    assert "diagnostics.E080" in problem_ids(check_deploy(tags=[TAG]))


@pytest.mark.django_db(transaction=True)
def test_under_check_deploy_too_an_unreachable_database_is_reported_once_and_the_rest_skipped(production):
    with unreachable_database():
        messages = check_deploy(tags=[TAG])
    database_checks = {check.check_name for check in CHECKS if check.needs_database}
    assert [message.id for message in messages if message.obj in database_checks] == ["diagnostics.E030"]
    assert "secrets.jwt" in {message.obj for message in messages}  # configuration checks still ran


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_is_tried_by_the_gate_and_one_other_check_not_by_each(production, monkeypatch):
    attempts = []
    with unreachable_database():
        wrapper = connections[DEFAULT_DB_ALIAS]
        connect = wrapper.get_new_connection
        monkeypatch.setattr(wrapper, "get_new_connection", lambda params: attempts.append(1) or connect(params))
        code, _ = check_production_json()
    assert code == 1
    assert 1 <= len(attempts) <= 2  # each attempt may wait out MYSQL_CONNECT_TIMEOUT


@pytest.mark.django_db
def test_check_deploy_reports_no_id_twice(production, monkeypatch):
    for breakage in BREAKAGES.values():
        breakage(production, monkeypatch)
    ids = Counter(message.id for message in check_deploy() if message.id)
    assert {"diagnostics.E001", "security.W018", "diagnostics.E080"} <= set(ids)
    assert [id for id, count in ids.items() if count > 1] == []


@mysql
@pytest.mark.django_db
def test_djangos_own_findings_are_relayed_by_check_production_and_never_repeated_by_ours(production, monkeypatch):
    """Strict mode off and DEBUG on: check_production relays mysql.W002 and security.W018, ours never repeat them."""
    production.DEBUG = True
    options = connection.settings_dict["OPTIONS"]
    lax = options["init_command"].replace(production.MYSQL_SQL_MODE, "NO_ENGINE_SUBSTITUTION")
    monkeypatch.setitem(options, "init_command", lax)
    production.MYSQL_SQL_MODE = "NO_ENGINE_SUBSTITUTION"  # configured so: no E032, only strict mode is missing
    _, document = check_production_json()
    assert problems(document) == {"mysql.W002": "warning", "security.W018": "error"}
    ours = check_deploy(tags=[TAG])
    assert problem_ids(ours) == set()
    assert all(message.id is None or message.id.startswith("diagnostics.") for message in ours)


@mysql
@pytest.mark.django_db
def test_passing_checks_are_infos_that_do_not_fail_check_deploy_at_warning_level(production):
    production.SECURE_HSTS_INCLUDE_SUBDOMAINS = production.SECURE_HSTS_PRELOAD = True
    shown = StringIO()
    call_command("check", "--deploy", "--database", "default", "--fail-level", "WARNING", stderr=shown)
    assert "INFOS:" in shown.getvalue()
    assert "secrets.jwt: JWT_SECRET_KEY is set" in shown.getvalue()
    assert "WARNINGS:" not in shown.getvalue() and "ERRORS:" not in shown.getvalue()
