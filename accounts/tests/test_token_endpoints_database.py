"""Login, refresh, verify and logout under database trouble: 503 `database_unavailable`, never 401.

A 401 tells the client its token (or password) is bad and to throw it away; a database that is
down says nothing about the token. Every statement each endpoint runs is failed in turn with
MySQL's 2013 (both passes), and on MariaDB the connection is really killed, or cut at a proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import MySQLdb
import pytest
from django.conf import settings
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from accounts.errors import CLIENT_DETAILS
from accounts.services import session_start
from accounts.tests.helpers import ALICE_PASSWORD, bearer, failures, rejection_lines
from core.db.session import MARIADB_TRX_QUERY
from core.tests.proxy import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)

# What the session guard asks the server after the response is made (core/db/session.py).
SESSION_CHECKS = (MARIADB_TRX_QUERY, "SET TRANSACTION")


@dataclass
class Call:
    client: APIClient
    path: str
    body: dict[str, Any]


def login(alice, n: int) -> Call:
    # A client address of its own each time: the login throttles must not answer instead.
    client = APIClient(REMOTE_ADDR=f"10.0.{n // 250}.{n % 250 + 1}")
    return Call(client, "/api/auth/token/", {"username": alice.username, "password": ALICE_PASSWORD})


def refresh(alice, n: int) -> Call:
    return Call(APIClient(), "/api/auth/token/refresh/", {"refresh": session_start(user=alice).refresh})


def verify_access(alice, n: int) -> Call:
    return Call(APIClient(), "/api/auth/token/verify/", {"token": session_start(user=alice).access})


def verify_refresh(alice, n: int) -> Call:
    return Call(APIClient(), "/api/auth/token/verify/", {"token": session_start(user=alice).refresh})


def logout(alice, n: int) -> Call:
    pair = session_start(user=alice)
    return Call(bearer(pair.access), "/api/auth/logout/", {"refresh": pair.refresh})


def logout_all(alice, n: int) -> Call:
    return Call(bearer(session_start(user=alice).access), "/api/auth/logout/", {"all": True})


ENDPOINTS = [login, refresh, verify_access, verify_refresh, logout, logout_all]


def post(call: Call):
    return call.client.post(call.path, call.body, format="json")


def all_failures() -> float:
    return sum(failures(code) for code in CLIENT_DETAILS)


def assert_503_not_401(response) -> None:
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "database_unavailable"
    assert response["Retry-After"] == str(settings.DB_UNAVAILABLE_RETRY_AFTER_SECONDS)
    assert "WWW-Authenticate" not in response


class Statements:
    """An execute wrapper that counts statements and fails the one numbered `fail_at` with 2013."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.seen: list[str] = []

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        self.seen.append(sql)
        if len(self.seen) - 1 == self.fail_at:
            raise OperationalError(2013, "Lost connection to MySQL server during query")
        return execute(sql, params, many, context)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.__name__)
def test_each_statement_of_a_token_endpoint_failing_answers_503_never_401(alice, auth_log, endpoint):
    call = endpoint(alice, 0)
    statements = Statements()
    with connection.execute_wrapper(statements):
        assert post(call).status_code == 200
    assert statements.seen, "the endpoint reads the database"

    for index, sql in enumerate(statements.seen):
        if sql.startswith(SESSION_CHECKS):
            continue  # the end-of-request session check: the answer is made by then, and stands
        call = endpoint(alice, index + 1)  # built before the fault: fresh tokens each time
        before = all_failures()
        with connection.execute_wrapper(Statements(fail_at=index)):
            response = post(call)
        assert response.status_code == 503, f"statement {index} failing ({sql[:80]}): {response.content!r}"
        assert_503_not_401(response)
        assert all_failures() == before
        assert rejection_lines(auth_log) == []


# --- MariaDB: the connection really killed, or the network cut ------------------------------


def _admin_connection() -> MySQLdb.Connection:
    db = settings.DATABASES["default"]
    return MySQLdb.connect(
        host=db["HOST"], port=int(db["PORT"]), user=db["USER"], password=db["PASSWORD"], connect_timeout=5
    )


@pytest.mark.mysql
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.__name__)
def test_a_token_endpoint_on_a_killed_connection_answers_503_never_401(alice, auth_log, endpoint):
    call = endpoint(alice, 0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (connection_id,) = cursor.fetchone()
    admin = _admin_connection()
    try:
        admin.cursor().execute(f"KILL {int(connection_id)}")
        before = all_failures()

        response = post(call)

        assert_503_not_401(response)
        assert all_failures() == before
        assert rejection_lines(auth_log) == []
        assert post(endpoint(alice, 1)).status_code == 200, "the next request reconnects"
    finally:
        admin.close()
        connection.close()


@pytest.fixture
def cut_database() -> Iterator[TcpProxy]:
    """Route the test's connection through a proxy the test cuts."""
    db = connection.settings_dict
    saved = {"HOST": db["HOST"], "PORT": db["PORT"]}
    proxy = TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 3306)))
    connection.close()
    db.update(HOST="127.0.0.1", PORT=proxy.port)
    try:
        yield proxy
    finally:
        connection.close()
        db.update(saved)
        proxy.stop()


@pytest.mark.mysql
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.__name__)
def test_a_token_endpoint_cut_off_from_the_database_answers_503_never_401(alice, auth_log, cut_database, endpoint):
    call = endpoint(alice, 0)  # through the proxy, while it still forwards
    cut_database.cut()
    before = all_failures()

    response = post(call)

    assert_503_not_401(response)
    assert all_failures() == before
    assert rejection_lines(auth_log) == []
    cut_database.resume()
    connection.close()
    assert post(endpoint(alice, 1)).status_code == 200, "the database is back"
