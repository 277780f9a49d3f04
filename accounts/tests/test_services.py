"""Login, rotation with a reuse grace, breach detection, logout."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.hashers import MD5PasswordHasher, PBKDF2PasswordHasher, PBKDF2SHA1PasswordHasher
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts import services
from accounts.errors import TokenRejected
from accounts.models import IssuedRefreshToken, PasswordRehash, RevokeReason, TokenFamily
from accounts.tests.helpers import ALICE_PASSWORD, bearer, claims, session_durations
from accounts.tokens import AccessToken, hash_fingerprint

pytestmark = pytest.mark.django_db

MD5 = "django.contrib.auth.hashers.MD5PasswordHasher"
PBKDF2_SHA1 = "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher"
GRACE = timedelta(seconds=settings.JWT_REFRESH_REUSE_GRACE_SECONDS)


def rotated_ago(refresh: str, age: timedelta) -> None:
    """Pretend the first rotation of `refresh` happened `age` ago."""
    issued = IssuedRefreshToken.objects.get(token__jti=claims(refresh)["jti"])
    IssuedRefreshToken.objects.filter(pk=issued.pk).update(rotated_at=issued.rotated_at - age)


def rejected_code(call) -> str:
    with pytest.raises(TokenRejected) as caught:
        call()
    return caught.value.code


def test_login_starts_a_family_with_one_outstanding_refresh_token(alice):
    pair = services.session_login(request=None, username="alice", password=ALICE_PASSWORD)

    family = TokenFamily.objects.get(user=alice)
    refresh = claims(pair.refresh)
    assert refresh["fam"] == claims(pair.access)["fam"] == family.pk
    assert OutstandingToken.objects.get(jti=refresh["jti"]).token == pair.refresh
    assert IssuedRefreshToken.objects.get(family=family).rotated_at is None


@pytest.mark.parametrize("password", ["wrong", ""])
def test_login_with_a_wrong_password_returns_nothing_and_writes_nothing(alice, password):
    assert services.session_login(request=None, username="alice", password=password) is None
    assert not TokenFamily.objects.exists()


def test_a_refused_login_logs_the_username_cut_to_150_characters(alice, caplog):
    caplog.set_level(logging.INFO, logger="taskhub.auth")
    username = "u" * 150 + "TAIL"

    assert services.session_login(request=None, username=username, password="wrong") is None
    assert f"wrong username or password for {'u' * 150!r}" in caplog.text
    assert "uT" not in caplog.text


def test_login_of_an_inactive_user_returns_nothing(alice):
    alice.is_active = False
    alice.save()

    assert services.session_login(request=None, username="alice", password=ALICE_PASSWORD) is None


def test_refresh_rotates_into_a_successor_and_blacklists_the_old_token(alice_pair):
    rotated = services.session_refresh(raw_refresh=alice_pair.refresh)

    assert rotated.refresh != alice_pair.refresh
    old, new = claims(alice_pair.refresh), claims(rotated.refresh)
    assert new["fam"] == old["fam"] and new["jti"] != old["jti"]
    assert BlacklistedToken.objects.filter(token__jti=old["jti"]).exists()
    issued = IssuedRefreshToken.objects.get(token__jti=old["jti"])
    assert issued.successor_jti == new["jti"] and issued.rotated_at is not None
    assert bearer(rotated.access).get("/api/auth/me/").status_code == 200


def test_a_replay_inside_the_grace_returns_the_same_successor_and_a_valid_access_token(alice_pair):
    first = services.session_refresh(raw_refresh=alice_pair.refresh)
    rotated_ago(alice_pair.refresh, GRACE - timedelta(seconds=2))

    again = services.session_refresh(raw_refresh=alice_pair.refresh)

    assert again.refresh == first.refresh
    assert bearer(again.access).get("/api/auth/me/").status_code == 200
    assert TokenFamily.objects.get().revoked_at is None
    assert IssuedRefreshToken.objects.count() == 2


def test_replays_inside_the_grace_do_not_extend_it(alice_pair):
    services.session_refresh(raw_refresh=alice_pair.refresh)
    issued = IssuedRefreshToken.objects.get(token__jti=claims(alice_pair.refresh)["jti"])
    rotated_ago(alice_pair.refresh, GRACE - timedelta(seconds=2))
    first_rotation = IssuedRefreshToken.objects.get(pk=issued.pk).rotated_at

    services.session_refresh(raw_refresh=alice_pair.refresh)
    assert IssuedRefreshToken.objects.get(pk=issued.pk).rotated_at == first_rotation

    rotated_ago(alice_pair.refresh, timedelta(seconds=3))
    assert rejected_code(lambda: services.session_refresh(raw_refresh=alice_pair.refresh)) == "token_revoked"


def test_reuse_after_the_grace_is_refused_and_revokes_the_whole_family(
    alice, alice_pair, django_capture_on_commit_callbacks
):
    successor = services.session_refresh(raw_refresh=alice_pair.refresh)
    grandchild = services.session_refresh(raw_refresh=successor.refresh)
    other_session = services.session_start(user=alice)
    rotated_ago(alice_pair.refresh, GRACE + timedelta(seconds=1))
    sessions_before = session_durations()

    with django_capture_on_commit_callbacks(execute=True):
        code = rejected_code(lambda: services.session_refresh(raw_refresh=alice_pair.refresh))

    assert code == "token_revoked"
    family = TokenFamily.objects.get(pk=claims(alice_pair.refresh)["fam"])
    assert family.revoke_reason == RevokeReason.REUSE_DETECTED
    assert rejected_code(lambda: services.session_refresh(raw_refresh=grandchild.refresh)) == "token_revoked"
    assert BlacklistedToken.objects.filter(token__jti=claims(grandchild.refresh)["jti"]).exists()
    assert bearer(grandchild.access).get("/api/auth/me/").json()["code"] == "token_revoked"
    assert session_durations() == sessions_before + 1
    # Another login of the same user is another family: untouched.
    assert services.session_refresh(raw_refresh=other_session.refresh).refresh


def test_refresh_for_a_deleted_user_is_user_not_found(alice, alice_pair):
    alice.delete()

    assert rejected_code(lambda: services.session_refresh(raw_refresh=alice_pair.refresh)) == "user_not_found"


def test_refresh_for_a_deactivated_user_is_user_inactive_and_ends_the_session(alice, alice_pair):
    alice.is_active = False
    alice.save()

    assert rejected_code(lambda: services.session_refresh(raw_refresh=alice_pair.refresh)) == "user_inactive"
    assert TokenFamily.objects.get().revoke_reason == RevokeReason.USER_INACTIVE


def test_refresh_after_a_password_change_is_password_changed(alice, alice_pair):
    alice.set_password("another-password-5")
    alice.save()

    assert rejected_code(lambda: services.session_refresh(raw_refresh=alice_pair.refresh)) == "password_changed"
    assert TokenFamily.objects.get().revoke_reason == RevokeReason.PASSWORD_CHANGED


def test_an_access_token_cannot_be_used_to_refresh(alice_pair):
    assert rejected_code(lambda: services.session_refresh(raw_refresh=alice_pair.access)) == "token_invalid"


def test_a_refresh_token_without_rotation_bookkeeping_is_refused(alice, alice_pair):
    IssuedRefreshToken.objects.all().delete()

    assert rejected_code(lambda: services.session_refresh(raw_refresh=alice_pair.refresh)) == "token_invalid"


def test_logout_ends_the_session_of_the_given_refresh_token_only(alice, alice_pair, django_capture_on_commit_callbacks):
    other = services.session_start(user=alice)
    sessions_before = session_durations()

    with django_capture_on_commit_callbacks(execute=True):
        assert services.session_logout(user=alice, raw_refresh=alice_pair.refresh) == 1
        assert services.session_logout(user=alice, raw_refresh=alice_pair.refresh) == 0

    assert rejected_code(lambda: services.session_refresh(raw_refresh=alice_pair.refresh)) == "token_revoked"
    assert bearer(alice_pair.access).get("/api/auth/me/").status_code == 401
    assert bearer(other.access).get("/api/auth/me/").status_code == 200
    assert session_durations() == sessions_before + 1


def test_logout_refuses_another_users_refresh_token(alice, bob, alice_pair):
    assert rejected_code(lambda: services.session_logout(user=bob, raw_refresh=alice_pair.refresh)) == "token_invalid"
    assert TokenFamily.objects.get().revoked_at is None


def test_logout_all_revokes_every_session_of_the_user_and_no_one_elses(
    alice, bob, alice_pair, django_capture_on_commit_callbacks
):
    other = services.session_start(user=alice)
    bobs = services.session_start(user=bob)
    sessions_before = session_durations()

    with django_capture_on_commit_callbacks(execute=True):
        assert services.session_logout_all(user=alice) == 2

    for pair in (alice_pair, other):
        assert rejected_code(lambda pair=pair: services.session_refresh(raw_refresh=pair.refresh)) == "token_revoked"
    assert services.session_refresh(raw_refresh=bobs.refresh).refresh
    assert session_durations() == sessions_before + 2
    assert BlacklistedToken.objects.filter(token__user=alice).count() == 2


def test_a_token_blacklisted_meanwhile_does_not_break_the_revocation(alice, alice_pair, monkeypatch):
    """A token of the family may be blacklisted outside its lock (simplejwt's blacklist admin) between the
    read of the family's live tokens and their blacklisting: the revocation still completes."""
    read_live = IssuedRefreshToken.objects.filter

    def blacklisted_meanwhile(*args, **kwargs):
        token_ids = list(read_live(*args, **kwargs).values_list("token_id", flat=True))
        BlacklistedToken.objects.create(token_id=token_ids[0])
        return read_live(token_id__in=token_ids)

    monkeypatch.setattr(IssuedRefreshToken.objects, "filter", blacklisted_meanwhile)

    assert services.session_logout(user=alice, raw_refresh=alice_pair.refresh) == 1
    assert TokenFamily.objects.get().revoke_reason == RevokeReason.LOGOUT
    assert BlacklistedToken.objects.filter(token__jti=claims(alice_pair.refresh)["jti"]).count() == 1


def test_verify_names_a_foreign_token_type_cut_to_20_characters(alice_pair):
    token = AccessToken(alice_pair.access)
    token[api_settings.TOKEN_TYPE_CLAIM] = "t" * 20 + "TAIL"

    with pytest.raises(TokenRejected) as caught:
        services.token_verify(raw=str(token))

    assert caught.value.code == "token_invalid"
    assert caught.value.reason == f"token type {'t' * 20!r} is neither access nor refresh"


def test_verify_describes_a_valid_token_and_refuses_a_rotated_one_after_the_grace(alice, alice_pair):
    assert services.token_verify(raw=alice_pair.access)["token_type"] == "access"
    assert services.token_verify(raw=alice_pair.refresh)["user_id"] == alice.pk

    services.session_refresh(raw_refresh=alice_pair.refresh)
    assert services.token_verify(raw=alice_pair.refresh)["token_type"] == "refresh"
    rotated_ago(alice_pair.refresh, GRACE + timedelta(seconds=1))
    assert rejected_code(lambda: services.token_verify(raw=alice_pair.refresh)) == "token_revoked"


def test_verify_and_refresh_agree_on_the_last_instant_of_the_grace(alice_pair, monkeypatch):
    first = services.session_refresh(raw_refresh=alice_pair.refresh)
    rotated_at = IssuedRefreshToken.objects.get(token__jti=claims(alice_pair.refresh)["jti"]).rotated_at

    monkeypatch.setattr(timezone, "now", lambda: rotated_at + GRACE)
    assert services.token_verify(raw=alice_pair.refresh)["token_type"] == "refresh"
    assert services.session_refresh(raw_refresh=alice_pair.refresh).refresh == first.refresh

    monkeypatch.setattr(timezone, "now", lambda: rotated_at + GRACE + timedelta(microseconds=1))
    assert rejected_code(lambda: services.token_verify(raw=alice_pair.refresh)) == "token_revoked"


def test_a_user_created_between_the_hash_read_and_the_password_check_logs_in_without_a_rehash(
    django_user_model, monkeypatch
):
    authenticate = services.authenticate

    def signed_up_meanwhile(request, **credentials):
        django_user_model.objects.create_user("carol", "carol@example.com", "carol-password-1")
        return authenticate(request, **credentials)

    monkeypatch.setattr(services, "authenticate", signed_up_meanwhile)

    assert services.session_login(request=None, username="carol", password="carol-password-1")
    assert not PasswordRehash.objects.exists()


@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher", PBKDF2_SHA1])
def test_a_password_hash_upgrade_at_login_is_not_a_password_change(django_user_model):
    old_hash = PBKDF2SHA1PasswordHasher().encode("carol-password-1", "carolsalt", iterations=1)
    carol = django_user_model.objects.create(username="carol", password=old_hash)
    earlier = services.session_start(user=carol)

    assert services.session_login(request=None, username="carol", password="carol-password-1")

    carol.refresh_from_db()
    assert carol.password != old_hash  # Django re-hashed it with the preferred hasher
    assert bearer(earlier.access).get("/api/auth/me/").status_code == 200
    rotated = services.session_refresh(raw_refresh=earlier.refresh)
    carol.set_password("carol-password-2")
    carol.save()
    for token in (earlier.access, rotated.access):
        assert bearer(token).get("/api/auth/me/").json()["code"] == "password_changed"


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 2


@override_settings(PASSWORD_HASHERS=[f"{__name__}.QuickPBKDF2PasswordHasher", MD5])
def test_a_password_hash_upgrade_to_a_hash_that_sorts_after_the_old_one_is_not_a_password_change(
    django_user_model,
):
    old_hash = MD5PasswordHasher().encode("carol-password-1", "carolsalt")
    carol = django_user_model.objects.create(username="carol", password=old_hash)
    earlier = services.session_start(user=carol)

    assert services.session_login(request=None, username="carol", password="carol-password-1")

    carol.refresh_from_db()
    assert carol.password.startswith("pbkdf2_sha256$2$") and carol.password > old_hash
    assert bearer(earlier.access).get("/api/auth/me/").status_code == 200


@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher", PBKDF2_SHA1])
def test_two_logins_upgrading_the_same_hash_at_once_both_succeed(django_user_model):
    old_hash = PBKDF2SHA1PasswordHasher().encode("carol-password-1", "carolsalt", iterations=1)
    carol = django_user_model.objects.create(username="carol", password=old_hash)
    # What the other login wrote between this one's read of the hash and its own record.
    PasswordRehash.objects.create(user=carol, old_fingerprint=hash_fingerprint(old_hash), new_fingerprint="0" * 20)

    assert services.session_login(request=None, username="carol", password="carol-password-1")
    assert PasswordRehash.objects.get().new_fingerprint == "0" * 20


def test_a_login_without_a_hash_upgrade_records_no_rehash(alice):
    assert services.session_login(request=None, username="alice", password=ALICE_PASSWORD)
    assert not PasswordRehash.objects.exists()


def test_the_session_duration_runs_from_login_to_logout(alice, alice_pair, django_capture_on_commit_callbacks):
    TokenFamily.objects.update(created_at=timezone.now() - timedelta(hours=2))
    total_before = REGISTRY.get_sample_value("taskhub_user_session_duration_seconds_sum") or 0.0

    with django_capture_on_commit_callbacks(execute=True):
        services.session_logout(user=alice, raw_refresh=alice_pair.refresh)

    observed = REGISTRY.get_sample_value("taskhub_user_session_duration_seconds_sum") - total_before
    assert 7200 <= observed < 7300
