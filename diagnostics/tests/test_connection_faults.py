"""Real connection faults on MariaDB: killed, timed out, unreachable. None may answer 500."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections
from prometheus_client import REGISTRY

from accounts.services import session_start

pytestmark = [pytest.mark.mysql, pytest.mark.urls("diagnostics.tests.urls"), pytest.mark.django_db(transaction=True)]

DEADLINE_SECONDS = 20


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def _connection_gone(second_connection, connection_id: int) -> bool:
    return not second_connection.scalar(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (connection_id,)
    )


def test_requests_after_the_connection_was_killed_between_requests_succeed(
    wsgi, persistent_connection, second_connection
):
    first = wsgi.get("/t/state/").json()["connection_id"]
    second_connection.scalar(f"KILL {int(first)}")
    _wait_until(lambda: _connection_gone(second_connection, first), "the server dropped the connection")

    statuses = [wsgi.get("/t/state/").status for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert wsgi.get("/t/state/").json()["connection_id"] != first


def test_a_connection_killed_mid_query_costs_that_request_a_503_and_no_more(
    wsgi, persistent_connection, second_connection
):
    victim = wsgi.get("/t/state/").json()["connection_id"]
    killed = threading.Event()

    def kill_when_sleeping() -> None:
        busy = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s AND INFO LIKE 'SELECT SLEEP%%'"
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if second_connection.scalar(busy, (victim,)):
                second_connection.scalar(f"KILL {int(victim)}")
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_sleeping, daemon=True)
    killer.start()
    try:
        in_flight = wsgi.get("/t/sleep/")
    finally:
        killer.join(timeout=DEADLINE_SECONDS + 5)

    assert killed.is_set()
    assert in_flight.status == 503
    assert in_flight.json()["code"] == "database_unavailable"
    following = [wsgi.get("/t/state/") for _ in range(3)]
    assert [response.status for response in following] == [200, 200, 200]
    assert following[0].json()["connection_id"] != victim


def test_a_connection_dropped_by_wait_timeout_is_replaced_before_the_next_request(
    wsgi, persistent_connection, second_connection
):
    idle = wsgi.get("/t/short-wait/").json()["connection_id"]  # SET SESSION wait_timeout = 1
    time.sleep(2)
    _wait_until(lambda: _connection_gone(second_connection, idle), "the server timed the idle connection out")

    following = wsgi.get("/t/state/")

    assert following.status == 200
    assert following.json()["connection_id"] != idle


def test_an_unreachable_database_answers_503_even_with_a_valid_token(proxied_database, client_for, alice):
    client = client_for(alice)
    proxied_database.cut()

    for path in ("/api/tasks/db-monitor", "/t/one-query/"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.json()["code"] == "database_unavailable"
        assert response["Retry-After"] == "5"


def test_the_app_recovers_by_itself_once_the_database_answers_again(wsgi, proxied_database):
    assert wsgi.get("/t/one-query/").status == 200
    proxied_database.cut()
    assert [wsgi.get("/t/one-query/").status for _ in range(2)] == [503, 503]

    proxied_database.resume()

    assert [wsgi.get("/t/one-query/").status for _ in range(2)] == [200, 200]


def _bearer(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {session_start(user=user).access}"}


def _reconnects() -> float:
    return REGISTRY.get_sample_value("taskhub_db_reconnects_total") or 0.0


def test_an_api_request_on_a_connection_killed_between_requests_reconnects_and_succeeds(
    wsgi, persistent_connection, second_connection, alice
):
    """A dead connection is replaced, not a 503: Django's ping finds it dead before the user lookup."""
    headers = _bearer(alice)
    first = wsgi.get("/t/state/").json()["connection_id"]
    second_connection.scalar(f"KILL {int(first)}")
    _wait_until(lambda: _connection_gone(second_connection, first), "the server dropped the connection")
    before = _reconnects()

    response = wsgi.get("/api/auth/me/", headers=headers)

    assert response.status == 200, response.body
    assert response.json()["username"] == alice.username
    # TaskHub counts the reconnects it makes itself; Django's after a failed ping are its own.
    assert _reconnects() == before
    assert wsgi.get("/t/state/").json()["connection_id"] != first


def test_an_api_request_after_wait_timeout_dropped_the_connection_succeeds(
    wsgi, persistent_connection, second_connection, alice
):
    headers = _bearer(alice)
    idle = wsgi.get("/t/short-wait/").json()["connection_id"]  # SET SESSION wait_timeout = 1
    time.sleep(2)
    _wait_until(lambda: _connection_gone(second_connection, idle), "the server timed the idle connection out")

    assert wsgi.get("/api/auth/me/", headers=headers).status == 200
    assert wsgi.get("/t/state/").json()["connection_id"] != idle


def test_api_requests_on_a_live_connection_are_pinged_by_django_once_per_request(
    wsgi, persistent_connection, alice, monkeypatch
):
    headers = _bearer(alice)
    wsgi.get("/t/state/")
    pings = []
    wrapper = type(connections["default"])
    real = wrapper.is_usable
    monkeypatch.setattr(wrapper, "is_usable", lambda self: pings.append(1) or real(self))

    assert [wsgi.get("/api/auth/me/", headers=headers).status for _ in range(3)] == [200, 200, 200]
    assert pings == [1, 1, 1]
    pings.clear()
    assert wsgi.get("/t/one-query/").status == 200
    assert pings == [1]


def test_a_database_that_stays_away_still_answers_503_to_api_requests(wsgi, proxied_database, alice):
    headers = _bearer(alice)
    assert wsgi.get("/api/auth/me/", headers=headers).status == 200
    proxied_database.cut()

    response = wsgi.get("/api/auth/me/", headers=headers)

    assert response.status == 503
    assert response.json()["code"] == "database_unavailable"
