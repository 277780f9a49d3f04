"""The bearer authentication on protected endpoints: 401 codes, challenges, logs and metrics."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from accounts.authentication import JWTAuthentication
from accounts.errors import CHALLENGE
from accounts.fingerprint import key_fingerprint
from accounts.selectors import user_for_token
from accounts.services import session_logout_all, session_start
from accounts.tests.helpers import bearer, claims, failures, forge, issued_at, rejection_lines
from accounts.tokens import AccessToken, decode
from core.tests.both_ways import both_ways

# Every authentication both ways: the user lookup compiled once (accounts.fast_lookup) and the ORM's.
user_lookup = both_ways("user_lookup")
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("user_lookup")]

# Every GET endpoint that needs a token; other parts append theirs (e.g. "/api/tasks/statistics").
# The paths the old deployment guide's curl check and existing monitors call, plus the caller.
PROTECTED_PATHS = [
    "/api/auth/me/",
    "/api/tasks/statistics",
    "/api/tasks/statistics/",
    "/api/tasks/queue-status",
    "/api/tasks/db-monitor",
    "/api/tasks/",
]
OTHER_KEY = "another-instance-jwt-secret-0123456789abcdef"
OUR_KID = key_fingerprint(settings.JWT_SECRET_KEY)


def assert_401(response, code: str) -> None:
    assert response.status_code == 401, response.content
    assert response.json() == {"detail": response.json()["detail"], "code": code}
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_an_invalid_bearer_token_gets_401_json_with_an_rfc6750_challenge(path):
    response = bearer("invalid-token").get(path)

    assert_401(response, "token_invalid")
    assert response["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_no_token_gets_401_token_missing_with_a_challenge_without_error(path, auth_log):
    before = failures("token_missing")

    response = APIClient().get(path)

    assert_401(response, "token_missing")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert failures("token_missing") == before + 1
    [line] = rejection_lines(auth_log)
    assert "no Authorization header" in line and "hint" not in line


def test_no_token_behind_a_proxy_logs_that_the_proxy_may_strip_authorization(auth_log):
    response = APIClient().get("/api/auth/me/", HTTP_X_FORWARDED_FOR="203.0.113.7", HTTP_X_FORWARDED_PROTO="https")

    assert_401(response, "token_missing")
    [line] = rejection_lines(auth_log)
    assert "X-Forwarded-For" in line and "X-Forwarded-Proto" in line
    assert "may be stripping Authorization" in line


def test_another_authorization_scheme_counts_as_a_missing_bearer_token(auth_log):
    response = APIClient().get("/api/auth/me/", HTTP_AUTHORIZATION="Basic YWxpY2U6cHc=")

    assert_401(response, "token_missing")
    assert "scheme 'Basic'" in rejection_lines(auth_log)[0]


def test_a_malformed_bearer_header_is_an_invalid_token():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer two parts")

    assert_401(client.get("/api/auth/me/"), "token_invalid")


@pytest.mark.parametrize("header", ["Bearer", "bearer   "])
def test_a_bearer_scheme_without_a_token_is_an_invalid_token_not_a_500(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/auth/me/")

    assert_401(response, "token_invalid")
    assert response["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'


def test_a_valid_token_with_a_third_part_is_an_invalid_token(alice_pair):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {alice_pair.access} extra")

    assert_401(client.get("/api/auth/me/"), "token_invalid")


def test_another_scheme_is_logged_cut_to_20_characters(auth_log):
    scheme = "X-Custom-Scheme-0123456789"  # 26 characters, attacker-controlled
    response = APIClient().get("/api/auth/me/", HTTP_AUTHORIZATION=f"{scheme} abc")

    assert_401(response, "token_missing")
    assert f"(scheme {scheme[:20]!r})" in rejection_lines(auth_log)[0]


def test_the_challenge_for_a_malformed_header_never_raises(auth_log):
    """DRF asks for the challenge while answering any 401: a header that is not two parts is not an error here."""
    request = Request(APIRequestFactory().get("/api/auth/me/", HTTP_AUTHORIZATION="Bearer two parts"))

    assert JWTAuthentication().authenticate_header(request) == CHALLENGE
    assert "carries no Bearer token (scheme 'Bearer')" in rejection_lines(auth_log)[0]


def test_a_valid_token_authenticates_with_one_query(alice, alice_pair, django_assert_num_queries):
    with django_assert_num_queries(1):
        response = bearer(alice_pair.access).get("/api/auth/me/")

    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_the_authenticated_user_is_the_same_as_the_orm_loads_it(alice, alice_pair):
    """Compiled once or by the ORM each time, the lookup loads every field as the ORM does."""
    alice.is_staff, alice.last_login = True, timezone.now()
    alice.save()
    token = decode(alice_pair.access, AccessToken)

    user = user_for_token(token)

    expected = get_user_model().objects.get(pk=alice.pk)
    for field in get_user_model()._meta.concrete_fields:
        got, want = getattr(user, field.attname), getattr(expected, field.attname)
        assert (got, type(got)) == (want, type(want)), field.attname
    assert user._state.adding is False and user._state.db == "default"
    assert user.taskhub_family_revoked is False


def test_client_for_builds_a_client_this_authentication_accepts(alice, client_for):
    assert client_for(alice).get("/api/auth/me/").json()["id"] == alice.pk


def test_a_token_signed_with_another_key_is_401_and_the_log_names_both_fingerprints(alice_pair, auth_log):
    payload = claims(alice_pair.access)
    token = forge(payload, key=OTHER_KEY, headers={"kid": key_fingerprint(OTHER_KEY)})

    assert_401(bearer(token).get("/api/auth/me/"), "token_invalid")

    [line] = rejection_lines(auth_log)
    assert key_fingerprint(OTHER_KEY) in line and OUR_KID in line
    assert payload["jti"] in line


def test_an_expired_token_is_401_token_expired(alice):
    with issued_at(-timedelta(seconds=settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS + settings.JWT_LEEWAY_SECONDS + 5)):
        token = session_start(user=alice).access

    assert_401(bearer(token).get("/api/auth/me/"), "token_expired")


def test_a_refresh_token_used_as_access_token_is_401(alice_pair):
    assert_401(bearer(alice_pair.refresh).get("/api/auth/me/"), "token_invalid")


def test_alg_none_is_401(alice_pair):
    token = forge(claims(alice_pair.access), key=None, algorithm="none", headers={"kid": OUR_KID})

    assert_401(bearer(token).get("/api/auth/me/"), "token_invalid")


def test_a_tampered_token_is_401(alice_pair, bob):
    header, _, signature = alice_pair.access.split(".")
    other = session_start(user=bob).access.split(".")[1]

    assert_401(bearer(f"{header}.{other}.{signature}").get("/api/auth/me/"), "token_invalid")


def test_an_inactive_user_is_401_user_inactive(alice, alice_pair):
    alice.is_active = False
    alice.save()

    assert_401(bearer(alice_pair.access).get("/api/auth/me/"), "user_inactive")


def test_a_deleted_user_is_401_user_not_found(alice, alice_pair):
    alice.delete()

    assert_401(bearer(alice_pair.access).get("/api/auth/me/"), "user_not_found")


def test_a_password_change_invalidates_earlier_tokens(alice, alice_pair):
    alice.set_password("a-brand-new-password-9")
    alice.save()

    assert_401(bearer(alice_pair.access).get("/api/auth/me/"), "password_changed")
    assert bearer(session_start(user=alice).access).get("/api/auth/me/").status_code == 200


def test_access_tokens_of_a_revoked_session_are_401_token_revoked(alice, alice_pair):
    session_logout_all(user=alice)

    assert_401(bearer(alice_pair.access).get("/api/auth/me/"), "token_revoked")


def test_every_rejection_logs_the_marker_with_context_and_counts_its_code(alice_pair, auth_log):
    before = failures("token_invalid")

    bearer(alice_pair.refresh).get("/api/auth/me/", HTTP_X_REQUEST_ID="req-42")

    assert failures("token_invalid") == before + 1
    [line] = rejection_lines(auth_log)
    refresh_claims = claims(alice_pair.refresh)
    for part in ("wrong type", "request_id=req-42", "path=/api/auth/me/", "client=127.0.0.1", "code=token_invalid"):
        assert part in line
    assert f"jti={refresh_claims['jti']}" in line and f"kid={OUR_KID}" in line


def test_the_raw_token_never_appears_in_the_logs(alice, alice_pair, auth_log):
    expired_at = -timedelta(seconds=settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS + settings.JWT_LEEWAY_SECONDS + 5)
    with issued_at(expired_at):
        expired = session_start(user=alice).access
    foreign = forge(claims(alice_pair.access), key=OTHER_KEY, headers={"kid": key_fingerprint(OTHER_KEY)})
    tokens = [alice_pair.access, alice_pair.refresh, expired, foreign, "invalid-token-abcdef"]

    for token in tokens:
        bearer(token).get("/api/auth/me/")
    alice.is_active = False
    alice.save()
    bearer(alice_pair.access).get("/api/auth/me/")

    assert len(rejection_lines(auth_log)) == 5
    logged = auth_log.text + "".join(str(r.args) for r in auth_log.records)
    for token in tokens:
        assert token not in logged
        if token.count(".") == 2:
            assert token.split(".")[2] not in logged
