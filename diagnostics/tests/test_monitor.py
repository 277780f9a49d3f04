"""GET /api/tasks/db-monitor: staff only, with what applies to the database in use."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

URL = "/api/tasks/db-monitor"


def test_anonymous_callers_get_401(api_client):
    response = api_client.get(URL)
    assert response.status_code == 401
    assert "code" in response.json()


def test_users_who_are_not_staff_get_403(client_for, alice):
    assert client_for(alice).get(URL).status_code == 403


@pytest.mark.parametrize("path", [URL, URL + "/"])
def test_staff_get_the_report_with_and_without_the_slash(client_for, staff, path):
    response = client_for(staff).get(path)
    assert response.status_code == 200
    body = response.json()
    assert body["vendor"] == connection.display_name
    assert body["server_version"]
    assert 0 < body["ping_ms"] < 10_000, "a measured round trip, in milliseconds"
    assert {"forced_rollbacks", "reconnects", "db_errors", "db_errors_by_kind", "connections_opened"} <= set(
        body["counters"]
    )
    assert body["connection"]["conn_max_age"] == connection.settings_dict["CONN_MAX_AGE"]
    assert body["connection"]["health_checks"] == connection.settings_dict["CONN_HEALTH_CHECKS"]
    assert "age_seconds" in body["connection"]


@pytest.mark.mysql
def test_on_mysql_it_reads_the_session_and_server_usage_back(client_for, staff):
    body = client_for(staff).get(URL).json()
    session = body["connection"]["session"]
    assert session["wait_timeout"] == 3600
    assert session["interactive_timeout"] == 3700
    assert session["isolation"] == "READ-COMMITTED"
    assert "STRICT_TRANS_TABLES" in session["sql_mode"]
    assert session["character_set_connection"] == "utf8mb4"
    server = body["server"]
    assert server["threads_connected"] >= 1
    assert server["max_connections"] > 0
    assert server["max_used_connections"] >= 1
    assert server["usage_ratio"] == round(server["threads_connected"] / server["max_connections"], 4)
    assert {"aborted_connects", "aborted_clients"} <= set(server)
    assert body["connection"]["thread_id"] > 0


@pytest.mark.sqlite
def test_on_sqlite_it_reports_the_file_settings(client_for, staff):
    sqlite = client_for(staff).get(URL).json()["sqlite"]
    assert sqlite["journal_mode"] == "wal"
    assert sqlite["busy_timeout"] == 30000
    assert sqlite["transaction_mode"] == "IMMEDIATE"
    assert sqlite["path"] == str(connection.settings_dict["NAME"])
