"""Login throttling per client address and per username at that address, counted in the database."""

from __future__ import annotations

from unittest import mock

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.models import ThrottleWindow
from accounts.tests.helpers import ALICE_PASSWORD
from accounts.throttles import normalise_username, throttle_hit

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


@pytest.mark.parametrize("spelling", ["ｃａｒｏｌ", "carol\u200b", "CAROL", "cárol", " carol", "Ca\u0301rol"])
def test_spellings_the_collation_deems_equal_share_the_accounts_bucket(django_user_model, frozen_clock, spelling):
    django_user_model.objects.create_user("carol", password="carol-password-1")
    with override_settings(REST_FRAMEWORK=rates(login="3/min")):
        for _ in range(3):
            attempt("carol")
        other_spelling = attempt(spelling)

    assert other_spelling.status_code == 429


def test_normalise_username_folds_width_case_accents_and_invisible_characters():
    forms = ["ｃａｒｏｌ", "carol\u200b", "CAROL", "cárol", "carol\u00ad", "c\u200dar\ufe0fol"]
    assert {normalise_username(form) for form in forms} == {"carol"}
    assert normalise_username("bob") != normalise_username("carol")


def test_successful_logins_do_not_count_against_the_account(alice, frozen_clock):
    with override_settings(REST_FRAMEWORK=rates(login="10/min")):
        statuses = [attempt("alice", ALICE_PASSWORD).status_code for _ in range(11)]

    assert statuses == [200] * 11


def test_the_address_limit_still_counts_every_attempt(alice, frozen_clock):
    with override_settings(REST_FRAMEWORK=rates(login_address="5/min")):
        statuses = [attempt("alice", ALICE_PASSWORD).status_code for _ in range(6)]

    assert statuses == [200] * 5 + [429]


def test_failures_still_lock_the_account_at_that_address_after_successes(alice, frozen_clock):
    with override_settings(REST_FRAMEWORK=rates(login="3/min")):
        attempt("alice", ALICE_PASSWORD)
        statuses = [attempt("alice").status_code for _ in range(4)]

    assert statuses == [400, 400, 400, 429]


# --- The admin's login ----------------------------------------------------------------------------


def admin_attempt(client, username: str, password: str = "wrong", address: str = "10.0.0.1"):
    return client.post("/admin/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_the_admin_login_is_throttled_per_account_at_an_address(staff, frozen_clock, client):
    with override_settings(REST_FRAMEWORK=rates(login="3/min")):
        statuses = [admin_attempt(client, "staff").status_code for _ in range(3)]
        throttled = admin_attempt(client, "staff", "staff-password-1")
        elsewhere = admin_attempt(client, "staff", "staff-password-1", address="10.0.0.2")

    assert statuses == [200, 200, 200]  # the form again, with its error
    assert throttled.status_code == 429
    assert throttled["Retry-After"] == "45"
    assert elsewhere.status_code == 302


def test_the_admin_login_is_throttled_per_address(staff, frozen_clock, client):
    with override_settings(REST_FRAMEWORK=rates(login_address="3/min")):
        statuses = [admin_attempt(client, f"user{i}").status_code for i in range(4)]

    assert statuses == [200, 200, 200, 429]


def test_the_admin_login_shares_its_counters_with_the_api(staff, frozen_clock, client):
    with override_settings(REST_FRAMEWORK=rates(login="3/min")):
        for _ in range(3):
            attempt("staff")
        assert admin_attempt(client, "staff", "staff-password-1").status_code == 429
