"""The configuration checks: secrets, variables, hosts and origins, https, Django's relayed checks."""

from __future__ import annotations

import pytest
from django.core.checks import ERROR, INFO, WARNING

from diagnostics.checks import django_security, hosts, https, secrets, variables
from diagnostics.checks.secrets import example_values, is_placeholder
from diagnostics.tests.conftest import STRONG_DJANGO_KEY, STRONG_JWT_KEY, by_id


def test_the_production_configuration_passes_every_configuration_check(production):
    for check in (
        secrets.check_jwt_secret_key,
        secrets.check_django_secret_key,
        variables.check_mysql_variables,
        hosts.check_hosts_and_origins,
        https.check_https,
        django_security.check_django_security,
    ):
        results = check()
        assert [r.level for r in results] == [INFO] * len(results), results


def test_a_short_jwt_secret_key_is_an_error(production):
    production.JWT_SECRET_KEY = "only-twenty-chars-xx"
    [result] = secrets.check_jwt_secret_key()
    assert (result.id, result.level) == ("diagnostics.E001", ERROR)
    assert "20 characters" in result.msg


@pytest.mark.parametrize(
    "placeholder",
    ["change-me-to-a-long-random-string", "secret" * 8, "CHANGEME-changeme-CHANGEME-changeme-1234", "x" * 40],
)
def test_a_placeholder_jwt_secret_key_is_an_error_and_never_printed(production, placeholder):
    production.JWT_SECRET_KEY = placeholder
    [result] = secrets.check_jwt_secret_key()
    assert (result.id, result.level) == ("diagnostics.E002", ERROR)
    assert placeholder not in result.msg + result.hint


def test_a_jwt_secret_key_missing_from_the_environment_is_an_error(production, monkeypatch):
    monkeypatch.delenv("JWT_SECRET_KEY")
    [result] = secrets.check_jwt_secret_key()
    assert (result.id, result.level) == ("diagnostics.E001", ERROR)
    assert "not set" in result.msg


def test_the_placeholders_shipped_in_env_example_are_recognised():
    assert "change-me-to-a-long-random-string" in example_values()
    assert is_placeholder("change-me-to-another-long-random-string")
    assert not is_placeholder(STRONG_JWT_KEY)


def test_a_placeholder_django_secret_key_is_an_error(production):
    production.SECRET_KEY = "change-me-to-another-long-random-string"
    [result] = secrets.check_django_secret_key()
    assert (result.id, result.level) == ("diagnostics.E003", ERROR)


def test_the_same_value_for_both_keys_is_a_warning(production):
    production.SECRET_KEY = production.JWT_SECRET_KEY
    assert by_id(secrets.check_django_secret_key()) == {"diagnostics.W001": WARNING}


@pytest.mark.parametrize("missing", ["MYSQL_HOST", "MYSQL_USERNAME", "MYSQL_PASSWORD", "MYSQL_DATABASE"])
def test_a_missing_mysql_variable_is_an_error_naming_it(production, monkeypatch, missing):
    monkeypatch.delenv(missing)
    [result] = variables.check_mysql_variables()
    assert (result.id, result.level) == ("diagnostics.E005", ERROR)
    assert missing in result.msg


def test_an_empty_password_root_account_and_implicit_port_are_warnings(production, monkeypatch):
    monkeypatch.setenv("MYSQL_PASSWORD", "")
    monkeypatch.setenv("MYSQL_USERNAME", "root")
    monkeypatch.delenv("MYSQL_PORT")
    assert by_id(variables.check_mysql_variables()) == {
        "diagnostics.W002": WARNING,
        "diagnostics.W003": WARNING,
        "diagnostics.W004": WARNING,
    }


def test_debug_on_is_django_security_w018_escalated_to_an_error(production):
    production.DEBUG = True
    assert by_id(django_security.check_django_security()) == {"security.W018": ERROR}


def test_a_weak_django_secret_key_reuses_django_security_w009(production):
    production.SECRET_KEY = STRONG_DJANGO_KEY[:40]
    assert by_id(django_security.check_django_security()) == {"security.W009": WARNING}


def test_hsts_subdomain_and_preload_advice_is_left_to_check_deploy(production):
    production.SECURE_HSTS_INCLUDE_SUBDOMAINS = False
    production.SECURE_HSTS_PRELOAD = False
    assert by_id(django_security.check_django_security()) == {}


def test_silenced_django_checks_stay_silent(production):
    production.SESSION_COOKIE_SECURE = False
    assert by_id(django_security.check_django_security()) == {"security.W012": WARNING}
    production.SILENCED_SYSTEM_CHECKS = ["security.W012"]
    assert by_id(django_security.check_django_security()) == {}


def test_plain_http_is_a_warning_and_django_flags_cookies_and_hsts(production):
    production.EXTERNAL_PROTOCOL = "http"
    production.EXTERNAL_PORT = 80
    production.FRONTEND_DOMAIN = "http://app.example.com"
    production.CSRF_TRUSTED_ORIGINS = ["http://tasks.example.com"]
    production.CORS_ALLOWED_ORIGINS = ["http://app.example.com"]
    production.SECURE_PROXY_SSL_HEADER = None
    production.SESSION_COOKIE_SECURE = production.CSRF_COOKIE_SECURE = production.SECURE_SSL_REDIRECT = False
    production.SECURE_HSTS_SECONDS = 0
    assert by_id(https.check_https()) == {"diagnostics.W020": WARNING}
    assert by_id(hosts.check_hosts_and_origins()) == {}
    assert set(by_id(django_security.check_django_security())) == {
        "security.W004",
        "security.W008",
        "security.W012",
        "security.W016",
    }


def test_relayed_django_findings_come_in_a_fixed_order(production):
    production.DEBUG = True
    production.SESSION_COOKIE_SECURE = production.CSRF_COOKIE_SECURE = production.SECURE_SSL_REDIRECT = False
    production.SECURE_HSTS_SECONDS = 0
    found = [result.id for result in django_security.check_django_security() if result.level >= WARNING]
    assert found == ["security.W018", "security.W004", "security.W008", "security.W012", "security.W016"]


def test_https_without_the_proxy_ssl_header_is_a_warning(production):
    production.SECURE_PROXY_SSL_HEADER = None
    assert by_id(https.check_https()) == {"diagnostics.W021": WARNING}


def test_a_missing_external_host_is_an_error(production):
    production.EXTERNAL_HOST = ""
    assert by_id(hosts.check_hosts_and_origins()) == {"diagnostics.E010": ERROR}


def test_allowed_hosts_csrf_and_cors_that_disagree_with_the_environment_are_errors(production):
    production.ALLOWED_HOSTS = ["localhost"]
    production.CSRF_TRUSTED_ORIGINS = ["https://old.example.com"]
    production.CORS_ALLOWED_ORIGINS = []
    assert by_id(hosts.check_hosts_and_origins()) == {
        "diagnostics.E011": ERROR,
        "diagnostics.E012": ERROR,
        "diagnostics.E013": ERROR,
    }


def test_a_non_default_external_port_must_be_in_the_trusted_origin(production):
    production.EXTERNAL_PORT = 8443
    assert by_id(hosts.check_hosts_and_origins()) == {"diagnostics.E012": ERROR}
    production.CSRF_TRUSTED_ORIGINS = ["https://tasks.example.com:8443"]
    assert by_id(hosts.check_hosts_and_origins()) == {}


def test_wildcards_in_allowed_hosts_and_trusted_origins_are_understood(production):
    production.ALLOWED_HOSTS = [".example.com"]
    production.CSRF_TRUSTED_ORIGINS = ["https://*.example.com"]
    assert by_id(hosts.check_hosts_and_origins()) == {}
    production.ALLOWED_HOSTS = ["*"]
    assert by_id(hosts.check_hosts_and_origins()) == {"diagnostics.W011": WARNING}


def test_frontend_problems_missing_domain_allow_all_and_mixed_scheme(production):
    production.FRONTEND_DOMAIN = ""
    assert by_id(hosts.check_hosts_and_origins()) == {"diagnostics.W010": WARNING}
    production.FRONTEND_DOMAIN = "http://app.example.com"
    production.CORS_ALLOWED_ORIGINS = ["http://app.example.com"]
    assert by_id(hosts.check_hosts_and_origins()) == {"diagnostics.W012": WARNING}
    production.CORS_ALLOW_ALL_ORIGINS = True
    assert by_id(hosts.check_hosts_and_origins()) == {"diagnostics.W013": WARNING}
