"""The /api/auth/ endpoints end to end: shapes, status codes, error codes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from prometheus_client import REGISTRY
from rest_framework.fields import DateTimeField
from rest_framework.test import APIClient

from accounts.models import IssuedRefreshToken, TokenFamily
from accounts.serializers import MeSerializer
from accounts.tests.helpers import ALICE_PASSWORD, bearer, claims, failures, forge, rejection_lines
from accounts.tokens import current_kid

pytestmark = pytest.mark.django_db

drf_datetime = DateTimeField().to_representation

LOGIN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
VERIFY = "/api/auth/token/verify/"
LOGOUT = "/api/auth/logout/"
ME = "/api/auth/me/"


def post(path: str, data, client: APIClient | None = None, **extra):
    return (client or APIClient()).post(path, data, format="json", **extra)


def login(username: str = "alice", password: str = ALICE_PASSWORD) -> dict:
    response = post(LOGIN, {"username": username, "password": password})
    assert response.status_code == 200, response.content
    return response.json()


def test_login_returns_an_access_and_a_refresh_token(alice):
    tokens = login()

    assert set(tokens) == {"access", "refresh"}
    assert bearer(tokens["access"]).get(ME).json()["username"] == "alice"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"username": "alice", "password": "wrong"}, "invalid_credentials"),
        ({"username": "nobody", "password": "x"}, "invalid_credentials"),
        ({"username": "alice"}, "invalid"),
        ({"username": "alice", "password": ALICE_PASSWORD, "otp": "1"}, "invalid"),
        ({"username": ["alice"], "password": ALICE_PASSWORD}, "invalid"),
        (["alice", ALICE_PASSWORD], "invalid"),
    ],
)
def test_bad_logins_are_400_with_a_code_and_issue_nothing(alice, body, code):
    response = post(LOGIN, body)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not TokenFamily.objects.exists()


def test_malformed_json_is_a_400():
    response = APIClient().post(LOGIN, "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_refresh_returns_a_rotated_pair(alice):
    tokens = login()

    response = post(REFRESH, {"refresh": tokens["refresh"]})

    assert response.status_code == 200
    assert response.json()["refresh"] != tokens["refresh"]
    assert bearer(response.json()["access"]).get(ME).status_code == 200


@pytest.mark.parametrize(
    ("token", "code"),
    [("invalid-token", "token_invalid"), ("", "invalid")],
)
def test_refresh_with_a_bad_token_answers_its_code(token, code):
    response = post(REFRESH, {"refresh": token})

    assert response.json()["code"] == code
    if code.startswith("token_"):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    else:
        assert response.status_code == 400


def test_refresh_for_a_deleted_user_is_a_clean_401(alice, auth_log):
    tokens = login()
    alice.delete()
    before = failures("user_not_found")

    response = post(REFRESH, {"refresh": tokens["refresh"]})

    assert response.status_code == 401
    assert response.json()["code"] == "user_not_found"
    assert failures("user_not_found") == before + 1
    assert "path=/api/auth/token/refresh/" in rejection_lines(auth_log)[0]


def test_refresh_for_a_deactivated_user_is_a_clean_401(alice):
    tokens = login()
    alice.is_active = False
    alice.save()

    response = post(REFRESH, {"refresh": tokens["refresh"]})

    assert (response.status_code, response.json()["code"]) == (401, "user_inactive")


def test_reuse_after_the_grace_is_401_token_revoked(alice):
    tokens = login()
    post(REFRESH, {"refresh": tokens["refresh"]})
    IssuedRefreshToken.objects.filter(rotated_at__isnull=False).update(rotated_at=timezone.now() - timedelta(hours=1))

    response = post(REFRESH, {"refresh": tokens["refresh"]})

    assert (response.status_code, response.json()["code"]) == (401, "token_revoked")


def test_verify_accepts_a_valid_token_and_refuses_a_bad_one(alice):
    tokens = login()

    ok = post(VERIFY, {"token": tokens["access"]})
    bad = post(VERIFY, {"token": tokens["access"][:-3] + "abc"})

    assert ok.status_code == 200
    assert ok.json()["token_type"] == "access" and ok.json()["user_id"] == alice.pk
    assert (bad.status_code, bad.json()["code"]) == (401, "token_invalid")


def test_logout_revokes_the_given_refresh_token(alice, django_capture_on_commit_callbacks):
    tokens = login()
    sessions_before = REGISTRY.get_sample_value("taskhub_user_session_duration_seconds_count") or 0

    with django_capture_on_commit_callbacks(execute=True):
        response = post(LOGOUT, {"refresh": tokens["refresh"]}, bearer(tokens["access"]))

    assert response.status_code == 200
    assert response.json() == {"revoked_sessions": 1}
    assert post(REFRESH, {"refresh": tokens["refresh"]}).json()["code"] == "token_revoked"
    assert REGISTRY.get_sample_value("taskhub_user_session_duration_seconds_count") == sessions_before + 1


def test_logout_all_revokes_every_session(alice):
    first, second = login(), login()

    response = post(LOGOUT, {"all": True}, bearer(first["access"]))

    assert response.json() == {"revoked_sessions": 2}
    for tokens in (first, second):
        assert post(REFRESH, {"refresh": tokens["refresh"]}).json()["code"] == "token_revoked"


def test_logout_everywhere_naming_the_callers_own_token_means_everywhere(alice):
    first, second = login(), login()

    response = post(LOGOUT, {"refresh": first["refresh"], "all": True}, bearer(first["access"]))
    assert post(REFRESH, {"refresh": second["refresh"]}).json()["code"] == "token_revoked"

    assert response.status_code == 200
    assert response.json() == {"revoked_sessions": 2}


@pytest.mark.parametrize("body", [{}, {"all": False}, {"all": "maybe"}])
def test_logout_needs_refresh_or_all(alice, body):
    tokens = login()

    response = post(LOGOUT, body, bearer(tokens["access"]))

    assert response.status_code == 400
    assert TokenFamily.objects.get().revoked_at is None


def test_logout_with_a_bad_refresh_token_is_400_not_401(alice, bob):
    tokens, bobs = login(), login("bob", "bob-password-1")

    for refresh in ("garbage", bobs["refresh"]):
        response = post(LOGOUT, {"refresh": refresh}, bearer(tokens["access"]))
        assert response.status_code == 400
        assert response.json()["errors"]["refresh"][0]
    assert not TokenFamily.objects.filter(revoked_at__isnull=False).exists()


def test_logout_and_me_require_a_token():
    assert post(LOGOUT, {"all": True}).json()["code"] == "token_missing"
    assert APIClient().get(ME).status_code == 401


def test_me_returns_the_caller(alice, bob):
    alice.first_name, alice.last_login = "Alice", timezone.now()
    alice.save()
    body = bearer(login()["access"]).get(ME).json()

    assert body == {
        "id": alice.pk,
        "username": "alice",
        "email": "alice@example.com",
        "first_name": "Alice",
        "last_name": "",
        "is_staff": False,
        "date_joined": drf_datetime(alice.date_joined),
        "last_login": drf_datetime(alice.last_login),
    }


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai"])
def test_me_answers_exactly_what_its_documented_serializer_gives(alice, bob, settings, zone):
    """`/me/` builds its answer without a serializer per request; the schema's serializer is the reference."""
    settings.TIME_ZONE = zone
    alice.first_name, alice.last_name, alice.is_staff = "Alice", "Ün", True
    alice.last_login = timezone.now().replace(microsecond=123456)
    alice.save()
    bob.email, bob.last_login = "", None
    bob.save()
    for user, password in ((alice, ALICE_PASSWORD), (bob, "bob-password-1")):
        user.refresh_from_db()
        body = bearer(login(user.username, password)["access"]).get(ME).json()
        assert body == json.loads(json.dumps(MeSerializer(user).data)), user.username


def test_tokens_issued_by_login_carry_user_family_and_password_claims(alice):
    access = claims(login()["access"])

    assert access["user_id"] == str(alice.pk)
    assert access["fam"] == TokenFamily.objects.get().pk
    assert access["pwd"] and access["token_type"] == "access"


def test_the_openapi_schema_documents_bearer_auth_on_protected_endpoints():
    schema = SchemaGenerator().get_schema(request=None, public=True)

    assert schema["components"]["securitySchemes"]["jwtAuth"]["scheme"] == "bearer"
    assert {"jwtAuth": []} in schema["paths"]["/api/auth/me/"]["get"]["security"]
    assert "security" not in schema["paths"]["/api/auth/token/"]["post"]


# --- Hardening: odd input is a clean 400/401, never a 500 -------------------------------------


@pytest.mark.parametrize("field", ["username", "password"])
def test_a_login_with_an_unpaired_surrogate_is_a_400(alice, field):
    body = {"username": "alice", "password": ALICE_PASSWORD, field: "\ud800"}
    response = APIClient().post(LOGIN, json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["errors"]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_bearer_scheme_is_case_insensitive(alice, scheme):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {login()['access']}")

    assert client.get(ME).status_code == 200


def test_a_token_whose_family_belongs_to_another_user_is_refused(alice, bob):
    bobs_family = claims(login("bob", "bob-password-1")["refresh"])["fam"]
    payload = {**claims(login()["access"]), "fam": bobs_family}
    forged = forge(payload, key=settings.SIMPLE_JWT["SIGNING_KEY"], headers={"kid": current_kid()})

    response = bearer(forged).get(ME)

    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


@pytest.mark.parametrize("exp", [10**12, 10**18, 2**64])
def test_a_token_expiring_beyond_any_calendar_is_a_401(alice, exp):
    payload = {**claims(login()["access"]), "exp": exp}
    forged = forge(payload, key=settings.SIMPLE_JWT["SIGNING_KEY"], headers={"kid": current_kid()})

    for response in (bearer(forged).get(ME), post(VERIFY, {"token": forged})):
        assert response.status_code == 401
        assert response.json()["code"] == "token_invalid"
