"""Several server processes: a shared secret works across them, a differing one is a clean 401."""

from __future__ import annotations

import json
import subprocess

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from accounts.fingerprint import key_fingerprint
from accounts.tests.helpers import ALICE_PASSWORD
from accounts.tests.servers import request, server_env, start_server, wait_until_ready

OTHER_SECRET = "a-different-jwt-secret-on-a-misconfigured-instance-0123"
SHARED_LOGIN_RATE = "4/day"  # a day-long window: the test never straddles two windows


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker, tmp_path_factory):
    """Two instances with the test suite's JWT secret and one with another secret."""
    logs = tmp_path_factory.mktemp("servers")
    specs = {
        "a": server_env(settings.JWT_SECRET_KEY, LOGIN_THROTTLE_RATE=SHARED_LOGIN_RATE),
        "b": server_env(settings.JWT_SECRET_KEY, LOGIN_THROTTLE_RATE=SHARED_LOGIN_RATE),
        "other": server_env(OTHER_SECRET),
    }
    started = {}
    try:
        for name, env in specs.items():
            started[name] = start_server(env, logs / f"{name}.log")
        for server in started.values():
            wait_until_ready(server)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture
def alice(django_user_model):
    """alice with a hash the servers can check: they run with production's password hashers."""
    password = PBKDF2PasswordHasher().encode(ALICE_PASSWORD, PBKDF2PasswordHasher().salt())
    return django_user_model.objects.create(username="alice", password=password)


def login(server, username: str = "alice", password: str = ALICE_PASSWORD) -> tuple[int, dict]:
    status, _, body = request(server, "POST", "/api/auth/token/", {"username": username, "password": password})
    return status, body


@pytest.mark.django_db(transaction=True)
def test_instances_with_the_same_secret_accept_each_others_tokens(servers, alice):
    a, b = servers["a"], servers["b"]

    status, tokens = login(a)
    assert status == 200, tokens

    assert request(b, "GET", "/api/auth/me/", token=tokens["access"])[2]["username"] == "alice"
    status, _, rotated = request(b, "POST", "/api/auth/token/refresh/", {"refresh": tokens["refresh"]})
    assert status == 200
    status, _, replay = request(a, "POST", "/api/auth/token/refresh/", {"refresh": tokens["refresh"]})
    assert (status, replay["refresh"]) == (200, rotated["refresh"])
    assert request(a, "GET", "/api/auth/me/", token=rotated["access"])[0] == 200


@pytest.mark.django_db(transaction=True)
def test_an_instance_with_another_secret_answers_401_and_logs_both_fingerprints(servers, alice):
    status, tokens = login(servers["a"])
    assert status == 200

    status, headers, body = request(servers["other"], "GET", "/api/auth/me/", token=tokens["access"])

    assert status == 401
    assert body["code"] == "token_invalid"
    assert headers["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    log = servers["other"].log()
    [line] = [line for line in log.splitlines() if "❌ Token验证失败" in line and "code=token_invalid" in line]
    assert key_fingerprint(settings.JWT_SECRET_KEY) in line and key_fingerprint(OTHER_SECRET) in line
    assert tokens["access"] not in log


@pytest.mark.django_db(transaction=True)
def test_curl_with_an_invalid_bearer_token_gets_a_401_json(servers):
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code} %{content_type}"]
        + ["-H", "Authorization: Bearer invalid-token", servers["a"].url + "/api/tasks/statistics"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    body, status_line = result.stdout.rsplit("\n", 1)
    assert status_line == "401 application/json"
    assert json.loads(body)["code"] == "token_invalid"


@pytest.mark.django_db(transaction=True)
def test_the_login_throttle_is_shared_by_every_process(servers, alice):
    a, b = servers["a"], servers["b"]

    statuses = [login(server, password="wrong")[0] for server in (a, b, a, b)]
    throttled = [login(server)[0] for server in (a, b)]

    assert statuses == [400, 400, 400, 400]
    assert throttled == [429, 429]
