"""Each new MySQL connection has its session settings read back, checked and logged once."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.test import override_settings

from core.db.setup import connection_info, session_problems

GOOD_SESSION = {
    "wait_timeout": 3600,
    "interactive_timeout": 3700,
    "sql_mode": "STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION",
    "isolation": "READ-COMMITTED",
    "character_set_client": "utf8mb4",
    "character_set_connection": "utf8mb4",
    "character_set_results": "utf8mb4",
}


def test_a_session_matching_the_settings_has_no_problems():
    assert session_problems(GOOD_SESSION) == []


def test_each_setting_that_did_not_take_effect_is_named():
    session = {
        **GOOD_SESSION,
        "wait_timeout": 28800,
        "sql_mode": "NO_ENGINE_SUBSTITUTION",
        "isolation": "REPEATABLE-READ",
        "character_set_connection": "utf8mb3",
    }
    problems = "; ".join(session_problems(session))
    assert "wait_timeout=28800 (expected 3600)" in problems
    assert "sql_mode lacks" in problems and "STRICT_TRANS_TABLES" in problems
    assert "isolation=REPEATABLE-READ (expected READ-COMMITTED)" in problems
    assert "character_set_connection=utf8mb3" in problems
    assert "interactive_timeout" not in problems


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_new_connection_logs_the_applied_session_values_once(caplog):
    connection.close()
    with caplog.at_level(logging.INFO, logger="taskhub.db"):
        connection.ensure_connection()
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    ready = [r.getMessage() for r in caplog.records if "✅ MySQL会话优化完成" in r.getMessage()]
    assert len(ready) == 1
    for applied in ("wait_timeout=3600", "interactive_timeout=3700", "isolation=READ-COMMITTED", "STRICT_TRANS_TABLES"):
        assert applied in ready[0]
    assert connection_info(connection).session["character_set_connection"] == "utf8mb4"


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@override_settings(MYSQL_WAIT_TIMEOUT=99)
def test_a_session_setting_that_did_not_take_effect_is_logged_as_an_error(caplog):
    connection.close()
    with caplog.at_level(logging.INFO, logger="taskhub.db"):
        connection.ensure_connection()
    assert "❌ MySQL会话设置未生效: wait_timeout=3600 (expected 99)" in caplog.text
    assert "✅ MySQL会话优化完成" not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_the_age_of_the_current_connection_is_known():
    connection.close()
    connection.ensure_connection()
    info = connection_info(connection)
    assert info is not None and 0 <= info.age_seconds < 60
    connection.close()
    assert connection_info(connection) is None
