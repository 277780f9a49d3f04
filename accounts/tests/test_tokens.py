"""Token signing and decoding: kid, pinned algorithm, leeway, precise rejection reasons."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.test import override_settings

from accounts import tokens as tokens_module
from accounts.errors import TOKEN_EXPIRED, TOKEN_INVALID, TokenRejected
from accounts.fingerprint import key_fingerprint
from accounts.services import session_start
from accounts.tests.helpers import claims, forge, issued_at
from accounts.tokens import (
    AccessToken,
    KeyIdTokenBackend,
    decode,
    get_token_backend,
    leeway,
    password_fingerprint,
    peek_jti,
    peek_kid,
)

pytestmark = pytest.mark.django_db

OTHER_KEY = "another-instance-jwt-secret-0123456789abcdef"


def test_tokens_carry_the_signing_key_fingerprint_as_kid_and_never_the_key(alice):
    pair = session_start(user=alice)
    for token in (pair.access, pair.refresh):
        header = jwt.get_unverified_header(token)
        assert header == {"alg": "HS256", "typ": "JWT", "kid": key_fingerprint(settings.JWT_SECRET_KEY)}
        assert settings.JWT_SECRET_KEY not in json.dumps(header) + json.dumps(claims(token))


def test_a_token_signed_with_another_key_is_rejected_naming_both_fingerprints(alice):
    payload = claims(session_start(user=alice).access)
    token = forge(payload, key=OTHER_KEY, headers={"kid": key_fingerprint(OTHER_KEY)})

    with pytest.raises(TokenRejected) as caught:
        decode(token, AccessToken)

    assert caught.value.code == TOKEN_INVALID
    assert key_fingerprint(OTHER_KEY) in caught.value.reason
    assert key_fingerprint(settings.JWT_SECRET_KEY) in caught.value.reason
    assert caught.value.jti == payload["jti"]


def test_a_token_from_another_key_that_copies_our_kid_still_fails_its_signature(alice):
    payload = claims(session_start(user=alice).access)
    token = forge(payload, key=OTHER_KEY, headers={"kid": key_fingerprint(settings.JWT_SECRET_KEY)})

    with pytest.raises(TokenRejected, match="bad signature") as caught:
        decode(token, AccessToken)
    assert caught.value.code == TOKEN_INVALID


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("algorithm", ["none", "HS512", "HS384"])
def test_algorithms_other_than_hs256_are_rejected(alice, algorithm):
    payload = claims(session_start(user=alice).access)
    key = None if algorithm == "none" else settings.JWT_SECRET_KEY
    token = forge(payload, key=key, algorithm=algorithm, headers={"kid": key_fingerprint(settings.JWT_SECRET_KEY)})

    with pytest.raises(TokenRejected, match="is not HS256") as caught:
        decode(token, AccessToken)
    assert caught.value.code == TOKEN_INVALID


def test_a_tampered_payload_is_rejected(alice, bob):
    header, payload, signature = session_start(user=alice).access.split(".")
    forged = dict(claims(f"{header}.{payload}.{signature}"), user_id=str(bob.pk))
    forged_part = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()

    with pytest.raises(TokenRejected, match="bad signature") as caught:
        decode(f"{header}.{forged_part}.{signature}", AccessToken)
    assert caught.value.code == TOKEN_INVALID


def test_a_refresh_token_is_not_an_access_token(alice):
    with pytest.raises(TokenRejected, match="wrong type") as caught:
        decode(session_start(user=alice).refresh, AccessToken)
    assert caught.value.code == TOKEN_INVALID


@pytest.mark.parametrize("raw", ["invalid-token", "", "a.b.c", "....", "eyJ.eyJ.x", "Bearer"])
def test_garbage_is_rejected_as_invalid(raw):
    with pytest.raises(TokenRejected) as caught:
        decode(raw, AccessToken)
    assert caught.value.code == TOKEN_INVALID


def test_an_expired_token_is_rejected_as_expired(alice):
    lifetime = timedelta(seconds=settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS)
    with issued_at(-(lifetime + timedelta(seconds=settings.JWT_LEEWAY_SECONDS + 5))):
        token = session_start(user=alice).access

    with pytest.raises(TokenRejected) as caught:
        decode(token, AccessToken)
    assert caught.value.code == TOKEN_EXPIRED


def _count_verifications(monkeypatch) -> list:
    """Record every token the backend verifies (signature and claims), cached or not."""
    verifications = []
    real = KeyIdTokenBackend._decode
    monkeypatch.setattr(
        KeyIdTokenBackend,
        "_decode",
        lambda self, raw, verify: (verify and verifications.append(raw)) or real(self, raw, verify),
    )
    return verifications


def test_a_token_is_verified_once_and_its_claims_come_from_memory_afterwards(alice, monkeypatch):
    token = session_start(user=alice).access
    verifications = _count_verifications(monkeypatch)

    first, second = decode(token, AccessToken), decode(token, AccessToken)

    assert verifications == [token]
    assert first.payload == second.payload and first.payload is not second.payload
    second.payload["user_id"] = "someone-else"  # a caller's change never reaches the next request
    assert decode(token, AccessToken)["user_id"] == str(alice.pk)
    assert verifications == [token]


def test_the_verified_tokens_are_bounded_and_kept_per_signing_key(alice, monkeypatch):
    monkeypatch.setattr(tokens_module, "VERIFIED_TOKENS_CACHED", 2)
    backend = KeyIdTokenBackend(settings.JWT_SECRET_KEY, leeway())
    pair = session_start(user=alice)
    verifications = _count_verifications(monkeypatch)

    for token in (pair.access, pair.refresh, session_start(user=alice).access, pair.access):
        backend.decode(token)

    assert backend.cache_info().maxsize == 2 and backend.cache_info().currsize == 2
    assert verifications.count(pair.access) == 2  # pushed out by two newer tokens, verified again
    other = KeyIdTokenBackend(OTHER_KEY, leeway())
    assert other.cache_info().currsize == 0
    with pytest.raises(TokenRejected, match="signed with another key"):
        other.decode(pair.access)


def test_a_token_verified_while_fresh_is_token_expired_once_its_time_has_passed(alice):
    token = session_start(user=alice).access
    decode(token, AccessToken)
    later = timedelta(seconds=settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS + settings.JWT_LEEWAY_SECONDS + 5)

    with issued_at(later), pytest.raises(TokenRejected) as caught:
        decode(token, AccessToken)
    assert caught.value.code == TOKEN_EXPIRED
    assert caught.value.jti == claims(token)["jti"]


def test_a_remembered_token_expires_on_time_even_without_the_token_class_s_own_check(alice, monkeypatch):
    token = session_start(user=alice).access
    decode(token, AccessToken)
    monkeypatch.setattr(AccessToken, "check_exp", lambda self, claim="exp", current_time=None: None)
    exp = claims(token)["exp"]
    allowed = settings.JWT_LEEWAY_SECONDS

    monkeypatch.setattr(tokens_module, "_epoch_seconds", lambda: exp + allowed - 0.5)
    assert decode(token, AccessToken)["user_id"] == str(alice.pk)  # still within the leeway
    for now in (exp + allowed, exp + allowed + 0.5, exp + allowed + 3600):  # the instant, and after it
        monkeypatch.setattr(tokens_module, "_epoch_seconds", lambda now=now: now)
        with pytest.raises(TokenRejected) as caught:
            decode(token, AccessToken)
        assert caught.value.code == TOKEN_EXPIRED
        assert caught.value.jti == claims(token)["jti"]


def test_an_unverified_decode_reads_any_token_s_claims_and_remembers_none(alice, monkeypatch):
    # The rotation reads a stored successor with verify=False: its claims, whatever its
    # signature or age, never checked and never taken into the table of verified tokens.
    token = session_start(user=alice).access
    header, payload, _signature = token.split(".")
    forged = f"{header}.{payload}.{'A' * 43}"
    backend = get_token_backend()
    verifications = _count_verifications(monkeypatch)
    cached_before = backend.cache_info().currsize
    later = timedelta(seconds=settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS + settings.JWT_LEEWAY_SECONDS + 5)

    with issued_at(later):
        assert backend.decode(forged, verify=False)["jti"] == claims(token)["jti"]
        assert backend.decode(token, verify=False)["jti"] == claims(token)["jti"]
    assert verifications == []
    assert backend.cache_info().currsize == cached_before


def test_a_token_verified_under_one_key_is_not_accepted_under_another(alice):
    token = session_start(user=alice).access
    decode(token, AccessToken)

    with override_settings(SIMPLE_JWT=dict(settings.SIMPLE_JWT, SIGNING_KEY=OTHER_KEY)):
        with pytest.raises(TokenRejected, match="signed with another key"):
            decode(token, AccessToken)


def test_rejected_tokens_are_checked_again_every_time(alice, monkeypatch):
    header, payload, _signature = session_start(user=alice).access.split(".")
    forged = f"{header}.{payload}.{'A' * 43}"
    verifications = _count_verifications(monkeypatch)
    cached_before = get_token_backend().cache_info().currsize
    for _ in range(2):
        with pytest.raises(TokenRejected, match="bad signature"):
            decode(forged, AccessToken)
    assert verifications == [forged, forged]
    assert get_token_backend().cache_info().currsize == cached_before


def test_a_token_expired_within_the_leeway_is_still_accepted(alice):
    lifetime = timedelta(seconds=settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS)
    with issued_at(-(lifetime + timedelta(seconds=10))):
        token = session_start(user=alice).access

    assert decode(token, AccessToken)["user_id"] == str(alice.pk)


def test_a_server_clock_20s_behind_the_issuer_accepts_a_fresh_token(alice):
    with issued_at(timedelta(seconds=20)):
        token = session_start(user=alice).access

    assert decode(token, AccessToken)["user_id"] == str(alice.pk)


def test_a_token_issued_further_in_the_future_than_the_leeway_is_rejected(alice):
    with issued_at(timedelta(seconds=settings.JWT_LEEWAY_SECONDS + 30)):
        token = session_start(user=alice).access

    with pytest.raises(TokenRejected, match="clock skew") as caught:
        decode(token, AccessToken)
    assert caught.value.code == TOKEN_INVALID


def test_the_leeway_setting_is_honoured(alice):
    with issued_at(timedelta(seconds=20)):
        token = session_start(user=alice).access
    strict = dict(settings.SIMPLE_JWT, LEEWAY=timedelta(seconds=5))

    with override_settings(SIMPLE_JWT=strict), pytest.raises(TokenRejected, match="clock skew"):
        decode(token, AccessToken)


def test_the_password_claim_follows_the_password_and_is_keyed(alice):
    before = password_fingerprint(alice)
    alice.set_password("a-new-password-2")

    assert password_fingerprint(alice) != before
    assert before not in alice.password
    assert len(before) == 20  # 80 bits of HMAC-SHA256: short in every token, never the hash
    current = password_fingerprint(alice)
    with override_settings(SIMPLE_JWT=dict(settings.SIMPLE_JWT, SIGNING_KEY=OTHER_KEY)):
        assert password_fingerprint(alice) != current


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "a.b",
        "!!!!.e30.sig",
        "e30.e30",
        "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.e30.sig.x",
        "eyJhbGciOiJIUzI1NiJ9x.e30.sig",
    ],
)
def test_a_malformed_token_header_is_token_invalid(raw):
    from accounts.tokens import _unverified_header

    with pytest.raises(TokenRejected) as caught:
        _unverified_header(raw)
    assert caught.value.code == "token_invalid"


def test_the_header_peek_reads_what_pyjwt_reads():
    from accounts.tokens import _unverified_header

    token = jwt.encode({"sub": "1"}, "k" * 32, algorithm="HS256", headers={"kid": "abc123"})
    assert _unverified_header(token) == jwt.get_unverified_header(token)
    assert _unverified_header(token.encode()) == jwt.get_unverified_header(token)


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (timedelta(seconds=7), timedelta(seconds=7)),
        (30, timedelta(seconds=30)),
        (0, timedelta(0)),
        (None, timedelta(0)),
    ],
    ids=["timedelta", "seconds", "zero", "none"],
)
def test_the_leeway_may_be_configured_as_a_timedelta_or_in_seconds(configured, expected):
    with override_settings(SIMPLE_JWT=dict(settings.SIMPLE_JWT, LEEWAY=configured)):
        assert leeway() == expected


def _unsigned(header: dict, payload: dict | str) -> str:
    """A token with any header (PyJWT refuses to write some) and a signature nothing will accept."""

    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = payload if isinstance(payload, str) else json.dumps(payload)
    return f"{segment(json.dumps(header).encode())}.{segment(body.encode())}.{segment(b'not-a-signature')}"


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "HS", None], ids=["ES256", "EdDSA", "HS", "no alg"])
def test_algorithms_sorting_before_hs256_or_none_at_all_are_rejected_by_the_header_check(alice, algorithm):
    header = {"typ": "JWT", "kid": key_fingerprint(settings.JWT_SECRET_KEY)}
    if algorithm is not None:
        header["alg"] = algorithm
    token = _unsigned(header, claims(session_start(user=alice).access))

    with pytest.raises(TokenRejected, match="is not HS256") as caught:
        decode(token, AccessToken)
    assert caught.value.code == TOKEN_INVALID


def test_a_well_signed_token_without_exp_is_invalid_not_expired(alice):
    payload = claims(session_start(user=alice).access)
    del payload["exp"]
    token = forge(payload, key=settings.JWT_SECRET_KEY, headers={"kid": key_fingerprint(settings.JWT_SECRET_KEY)})

    with pytest.raises(TokenRejected) as caught:
        decode(token, AccessToken)
    assert caught.value.code == TOKEN_INVALID


def test_the_header_peek_reads_headers_of_every_length():
    """The header segment's padding is restored for every length (base64url drops it)."""
    from accounts.tokens import _unverified_header

    for length in range(1, 13):
        token = jwt.encode({"sub": "1"}, "k" * 32, algorithm="HS256", headers={"kid": "k" * length})
        assert _unverified_header(token) == jwt.get_unverified_header(token)


def test_header_and_claim_values_are_logged_only_when_short_and_printable():
    token = _unsigned({"alg": "HS256", "kid": "a kid with spaces"}, {"jti": "x" * 65})
    assert peek_kid(token) == "<unprintable>"
    assert peek_jti(token) == "<unprintable>"
    assert peek_kid(_unsigned({"alg": "HS256"}, {})) == ""
    assert peek_jti(_unsigned({"alg": "HS256"}, {})) == ""


@pytest.mark.parametrize(
    ("cause", "described"),
    [
        (jwt.InvalidSignatureError(), "bad signature"),
        (jwt.ImmatureSignatureError(), "issued in the future"),
        (jwt.InvalidAlgorithmError(), "algorithm not allowed (only HS256)"),
        (jwt.DecodeError(), "malformed token"),
        (jwt.InvalidAudienceError(), "invalid token (InvalidAudienceError)"),
        (None, "invalid token (unknown)"),
    ],
)
def test_each_cause_of_a_backend_rejection_is_described(cause, described):
    from accounts.tokens import _describe

    assert _describe(cause).startswith(described)
