"""Login throttling per client address and per username at that address, counted in the database."""

from __future__ import annotations

from unittest import mock

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.models import ThrottleWindow
from accounts.tests.helpers import ALICE_PASSWORD
from accounts.throttles import throttle_hit

pytestmark = pytest.mark.django_db

LOGIN = "/api/auth/token/"
WINDOW_START = 1_800_000_000  # a multiple of 60 and 3600: tests sit inside one window


def rates(**overrides) -> dict:
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {"login": "100/min", "login_address": "100/min", **overrides}
    return rest


@pytest.fixture
def frozen_clock():
    with mock.patch("accounts.throttles.clock", return_value=WINDOW_START + 15.5) as clock:
        yield clock


def attempt(username: str, password: str = "wrong", address: str = "10.0.0.1", **headers):
    return APIClient().post(
        LOGIN, {"username": username, "password": password}, format="json", REMOTE_ADDR=address, **headers
    )


def test_throttle_hit_allows_the_limit_then_says_how_long_to_wait(frozen_clock):
    hits = [throttle_hit(scope="s", ident="x", limit=3, period=60) for _ in range(5)]

    assert hits == [None, None, None, 45, 45]
    assert throttle_hit(scope="s", ident="y", limit=3, period=60) is None
    frozen_clock.return_value = WINDOW_START + 60
    assert throttle_hit(scope="s", ident="x", limit=3, period=60) is None


def test_one_username_from_one_address_is_throttled_with_429_and_retry_after(alice, frozen_clock):
    with override_settings(REST_FRAMEWORK=rates(login="3/min")):
        statuses = [attempt("alice").status_code for _ in range(3)]
        throttled = attempt("alice", ALICE_PASSWORD)

    assert statuses == [400, 400, 400]
    assert throttled.status_code == 429
    assert throttled.json()["code"] == "throttled"
    assert throttled["Retry-After"] == "45"


def test_a_throttled_username_still_logs_in_from_another_address(alice, frozen_clock):
    with override_settings(REST_FRAMEWORK=rates(login="3/min")):
        for _ in range(4):
            attempt("alice", address="10.0.0.1")
        elsewhere = attempt("alice", ALICE_PASSWORD, address="10.0.0.2")
        other_case = attempt("ALICE ", address="10.0.0.1")

    assert elsewhere.status_code == 200
    assert other_case.status_code == 429


def test_one_address_trying_many_usernames_is_throttled(alice, frozen_clock):
    with override_settings(REST_FRAMEWORK=rates(login_address="3/min")):
        statuses = [attempt(f"user{i}").status_code for i in range(4)]
        other_address = attempt("alice", ALICE_PASSWORD, address="10.0.0.9")

    assert statuses == [400, 400, 400, 429]
    assert other_address.status_code == 200


def test_a_spoofed_x_forwarded_for_does_not_evade_the_throttle(alice, frozen_clock):
    with override_settings(REST_FRAMEWORK=rates(login="3/min")):
        statuses = [attempt("alice", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(4)]

    assert statuses[-1] == 429


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(alice, frozen_clock):
    with override_settings(REST_FRAMEWORK=dict(rates(login="3/min"), NUM_PROXIES=1)):
        for _ in range(4):
            attempt("alice", address="10.0.0.254", HTTP_X_FORWARDED_FOR="198.51.100.1")
        other_client = attempt("alice", ALICE_PASSWORD, address="10.0.0.254", HTTP_X_FORWARDED_FOR="198.51.100.2")

    assert other_client.status_code == 200


def test_counters_live_in_the_database_shared_by_every_process(alice, frozen_clock):
    with override_settings(REST_FRAMEWORK=rates(login="3/min")):
        attempt("alice")
        attempt("alice")

    assert sorted(ThrottleWindow.objects.values_list("hits", flat=True)) == [2, 2]
