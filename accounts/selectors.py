"""Reads behind authentication: the token's user, fresh from the database on every request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef
from django.utils.crypto import constant_time_compare
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from accounts.errors import PASSWORD_CHANGED, TOKEN_INVALID, TOKEN_REVOKED, USER_INACTIVE, USER_NOT_FOUND, TokenRejected
from accounts.models import PasswordRehash, TokenFamily
from accounts.tokens import FAMILY_CLAIM, PASSWORD_CLAIM, current_kid, password_fingerprint
from core import shortcuts

# Hasher upgrades between a token's issue and its use: one per Django release at most.
MAX_REHASH_CHAIN = 5


def user_for_token(token: Token) -> Any:
    """Return the token's user, or raise `TokenRejected` (user gone, disabled, family revoked, password changed).

    One query: the user row plus whether the token's family was revoked (one more only for a token
    older than an upgrade of the password's hash). It is the first statement of an API request.
    Database errors are left to propagate: the API answers them with 503 `database_unavailable`,
    never with 401. The `user_lookup` shortcut (`accounts.fast_lookup`) runs the same query
    without compiling it on every request.
    """
    jti = str(token.get(api_settings.JTI_CLAIM, ""))
    user_id, family_id, password_claim = (
        token.get(api_settings.USER_ID_CLAIM),
        token.get(FAMILY_CLAIM),
        token.get(PASSWORD_CLAIM),
    )
    if not user_id or not isinstance(family_id, int) or not isinstance(password_claim, str):
        raise _rejected(TOKEN_INVALID, "token lacks its user, family or password claim", jti)

    user_model = get_user_model()
    try:
        lookup_value = user_model._meta.get_field(api_settings.USER_ID_FIELD).to_python(user_id)
        user = _user_finder()(user_id=lookup_value, family_id=family_id)
    except (ValueError, TypeError, ValidationError):
        raise _rejected(TOKEN_INVALID, f"user id claim {str(user_id)[:40]!r} is malformed", jti) from None

    if user is None:
        raise _rejected(USER_NOT_FOUND, f"user {user_id} no longer exists", jti)
    if not user.is_active:
        raise _rejected(USER_INACTIVE, f"user {user_id} is inactive", jti)
    if user.taskhub_family_revoked:
        if not TokenFamily.objects.filter(pk=family_id, user=user).exists():
            raise _rejected(TOKEN_INVALID, f"token family {family_id} is not a family of user {user_id}", jti)
        raise _rejected(TOKEN_REVOKED, f"token family {family_id} was revoked (logout or reuse)", jti)
    current = password_fingerprint(user)
    if not constant_time_compare(password_claim, current) and not _rehashed(user, password_claim, current):
        raise _rejected(PASSWORD_CHANGED, f"password of user {user_id} changed since the token was issued", jti)
    return user


def _find_user(*, user_id: Any, family_id: int) -> Any:
    """Return the user, annotated with whether the token's family is revoked (or not the user's), or None."""
    # "Revoked" unless the family is this user's and still open: a family of another user is refused too.
    live = TokenFamily.objects.filter(pk=family_id, user_id=OuterRef("pk"), revoked_at__isnull=True)
    users = get_user_model()._default_manager.filter(**{api_settings.USER_ID_FIELD: user_id})
    return users.annotate(taskhub_family_revoked=~Exists(live)).first()


@shortcuts.chosen
def _user_finder() -> Callable[..., Any]:
    if shortcuts.enabled("user_lookup"):
        from accounts.fast_lookup import find_user

        return find_user
    return _find_user


def _rehashed(user: Any, claim: str, current: str) -> bool:
    """Return True if the hash `claim` was made from was only upgraded (possibly repeatedly) into today's."""
    seen = claim
    for _ in range(MAX_REHASH_CHAIN):
        seen = (
            PasswordRehash.objects.filter(user=user, old_fingerprint=seen)
            .values_list("new_fingerprint", flat=True)
            .first()
        )
        if seen is None:
            return False
        if constant_time_compare(seen, current):
            return True
    return False


def _rejected(code: str, reason: str, jti: str) -> TokenRejected:
    return TokenRejected(code, reason, jti=jti, kid=current_kid())
