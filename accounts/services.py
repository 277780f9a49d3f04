"""Login, refresh-token rotation with a reuse grace, breach detection and logout.

A login starts a token family. Refreshing rotates the presented token into a successor inside a
transaction that holds the family's row lock, so concurrent refreshes of one token serialise:
the first rotates, the others (within `JWT_REFRESH_REUSE_GRACE_SECONDS` of that first rotation)
get the very same successor. Presented after the grace, the old token revokes its whole family.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from accounts.errors import PASSWORD_CHANGED, TOKEN_INVALID, TOKEN_REVOKED, USER_INACTIVE, TokenRejected
from accounts.models import IssuedRefreshToken, PasswordRehash, RevokeReason, TokenFamily
from accounts.selectors import user_for_token
from accounts.tokens import (
    FAMILY_CLAIM,
    PASSWORD_CLAIM,
    AccessToken,
    AnyToken,
    RefreshToken,
    current_kid,
    decode,
    hash_fingerprint,
    password_fingerprint,
)
from core import metrics

logger = logging.getLogger("taskhub.auth")


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str


def session_login(*, request: HttpRequest | None, username: str, password: str) -> TokenPair | None:
    """Check the credentials through Django's auth backends; start a session, or return None."""
    stored_hash = _stored_password_hash(username)
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        logger.info("login refused: wrong username or password for %r", username[:150])
        return None
    if stored_hash and stored_hash != user.password:
        # The password was just verified against `stored_hash`: a changed hash means an upgrade.
        PasswordRehash.objects.bulk_create(
            [
                PasswordRehash(
                    user=user,
                    old_fingerprint=hash_fingerprint(stored_hash),
                    new_fingerprint=hash_fingerprint(user.password),
                )
            ],
            ignore_conflicts=True,
        )
    return session_start(user=user)


def _stored_password_hash(username: str) -> str | None:
    user_model = get_user_model()
    lookup = {user_model.USERNAME_FIELD: username}
    return user_model._default_manager.filter(**lookup).values_list("password", flat=True).first()


def session_start(*, user: Any) -> TokenPair:
    """Start a new token family for `user` and return its first access and refresh tokens."""
    with transaction.atomic():
        refresh = RefreshToken()
        family = TokenFamily.objects.create(
            user=user, created_at=refresh.current_time, expires_at=datetime_from_epoch(refresh["exp"])
        )
        encoded = _issue(refresh, user=user, family=family)
    return TokenPair(access=str(refresh.access_token), refresh=encoded)


def session_refresh(*, raw_refresh: str) -> TokenPair:
    """Rotate a refresh token (or replay its rotation within the grace); raise `TokenRejected`."""
    refresh = decode(raw_refresh, RefreshToken)
    try:
        user = user_for_token(refresh)
    except TokenRejected as exc:
        if exc.code in (USER_INACTIVE, PASSWORD_CHANGED):
            family_revoke(family_id=refresh[FAMILY_CLAIM], reason=exc.code)
        raise
    with transaction.atomic():
        successor, rejection = _rotate_locked(refresh, user=user)
    if successor is None:
        # Raised only now, so a revocation made under the lock is committed, not rolled back.
        raise rejection
    token, encoded = successor
    return TokenPair(access=str(token.access_token), refresh=encoded)


def _rotate_locked(
    refresh: RefreshToken, *, user: Any
) -> tuple[tuple[RefreshToken, str], None] | tuple[None, TokenRejected]:
    """Rotate under the family's row lock; return ((successor, its string), None) or (None, rejection)."""
    jti = refresh[api_settings.JTI_CLAIM]
    now = timezone.now()
    family = TokenFamily.objects.select_for_update().filter(pk=refresh[FAMILY_CLAIM], user=user).first()
    if family is None:
        return None, _rejected(TOKEN_INVALID, "refresh token of an unknown token family", jti)
    if family.revoked_at is not None:
        return None, _rejected(TOKEN_REVOKED, f"token family {family.pk} revoked ({family.revoke_reason})", jti)
    # Locked too, so the read is current under any isolation level (the family lock already serialises).
    issued = IssuedRefreshToken.objects.select_for_update().filter(family=family, token__jti=jti).first()
    if issued is None:
        return None, _rejected(TOKEN_INVALID, "refresh token was never issued by this service", jti)

    if issued.rotated_at is None:
        successor = RefreshToken()
        encoded = _issue(successor, user=user, family=family)
        BlacklistedToken.objects.get_or_create(token_id=issued.token_id)
        issued.rotated_at, issued.successor_jti = now, successor[api_settings.JTI_CLAIM]
        issued.save(update_fields=["rotated_at", "successor_jti"])
        family.expires_at = datetime_from_epoch(successor["exp"])
        family.save(update_fields=["expires_at"])
        return (successor, encoded), None

    # Measured from the first rotation: replays inside the grace never move `rotated_at`.
    age = now - issued.rotated_at
    if age <= reuse_grace():
        stored = OutstandingToken.objects.filter(jti=issued.successor_jti).values_list("token", flat=True).first()
        if stored is None:
            return None, _rejected(TOKEN_REVOKED, "successor of this refresh token was purged", jti)
        # The stored string itself, so every replay returns byte-for-byte the same successor.
        return (RefreshToken(stored, verify=False), stored), None

    _revoke_locked(family, reason=RevokeReason.REUSE_DETECTED, now=now)
    logger.warning(
        "refresh token %s reused %.0fs after its rotation (grace %ss): token family %s of user %s revoked",
        jti,
        age.total_seconds(),
        settings.JWT_REFRESH_REUSE_GRACE_SECONDS,
        family.pk,
        family.user_id,
    )
    return None, _rejected(TOKEN_REVOKED, "rotated refresh token reused after the grace: family revoked", jti)


def reuse_grace() -> timedelta:
    """Return how long a rotated refresh token keeps yielding its successor."""
    return timedelta(seconds=settings.JWT_REFRESH_REUSE_GRACE_SECONDS)


def session_logout(*, user: Any, raw_refresh: str) -> int:
    """End the session (token family) of the given refresh token; return 1 if it was still open."""
    refresh = decode(raw_refresh, RefreshToken)
    if str(refresh.get(api_settings.USER_ID_CLAIM)) != str(user.pk):
        raise TokenRejected(TOKEN_INVALID, "refresh token belongs to another user", jti=refresh["jti"])
    family_id = refresh.get(FAMILY_CLAIM)
    if not isinstance(family_id, int):
        raise TokenRejected(TOKEN_INVALID, "refresh token without a family", jti=refresh["jti"])
    return int(family_revoke(family_id=family_id, reason=RevokeReason.LOGOUT))


def session_logout_all(*, user: Any) -> int:
    """End every open session of `user`; return how many there were."""
    now = timezone.now()
    with transaction.atomic():
        families = list(TokenFamily.objects.select_for_update().filter(user=user, revoked_at=None).order_by("pk"))
        for family in families:
            _revoke_locked(family, reason=RevokeReason.LOGOUT_ALL, now=now)
    return len(families)


def family_revoke(*, family_id: int, reason: str) -> bool:
    """Revoke one token family and every refresh token in it; return False if already revoked."""
    with transaction.atomic():
        family = TokenFamily.objects.select_for_update().filter(pk=family_id).first()
        if family is None or family.revoked_at is not None:
            return False
        _revoke_locked(family, reason=reason, now=timezone.now())
    return True


def _revoke_locked(family: TokenFamily, *, reason: str, now: datetime) -> None:
    family.revoked_at, family.revoke_reason = now, reason
    family.save(update_fields=["revoked_at", "revoke_reason"])
    live = IssuedRefreshToken.objects.filter(family=family, token__blacklistedtoken__isnull=True)
    BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token_id=token_id) for token_id in live.values_list("token_id", flat=True)],
        ignore_conflicts=True,
    )
    duration = (now - family.created_at).total_seconds()
    transaction.on_commit(lambda: metrics.SESSION_DURATION.observe(duration))
    logger.info("token family %s of user %s ended after %.0fs: %s", family.pk, family.user_id, duration, reason)


def _issue(token: RefreshToken, *, user: Any, family: TokenFamily) -> str:
    """Record a new refresh token of `family` (simplejwt's outstanding list plus our bookkeeping)."""
    token[api_settings.USER_ID_CLAIM] = str(user.pk)
    token[FAMILY_CLAIM] = family.pk
    token[PASSWORD_CLAIM] = password_fingerprint(user)
    encoded = str(token)
    outstanding = OutstandingToken.objects.create(
        user=user,
        jti=token[api_settings.JTI_CLAIM],
        token=encoded,
        created_at=token.current_time,
        expires_at=datetime_from_epoch(token["exp"]),
    )
    IssuedRefreshToken.objects.create(token=outstanding, family=family)
    return encoded


def _rejected(code: str, reason: str, jti: str) -> TokenRejected:
    return TokenRejected(code, reason, jti=jti, kid=current_kid())


def token_verify(*, raw: str) -> dict[str, Any]:
    """Return what a valid access or refresh token says; raise `TokenRejected` for any other."""
    token = decode(raw, AnyToken)
    jti = str(token.get(api_settings.JTI_CLAIM, ""))
    token_type = token.get(api_settings.TOKEN_TYPE_CLAIM)
    if token_type not in (AccessToken.token_type, RefreshToken.token_type):
        raise _rejected(TOKEN_INVALID, f"token type {str(token_type)[:20]!r} is neither access nor refresh", jti)
    user = user_for_token(token)
    if token_type == RefreshToken.token_type:
        issued = IssuedRefreshToken.objects.filter(token__jti=jti).first()
        if issued is None:
            raise _rejected(TOKEN_INVALID, "refresh token was never issued by this service", jti)
        if issued.rotated_at is not None and timezone.now() - issued.rotated_at > reuse_grace():
            raise _rejected(TOKEN_REVOKED, "refresh token was rotated and its reuse grace is over", jti)
    return {"token_type": token_type, "user_id": user.pk, "expires_at": datetime_from_epoch(token["exp"])}
