"""Request and response shapes of the auth endpoints."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

TOKEN_MAX_LENGTH = 4096


class StrictSerializer(serializers.Serializer):
    """Reject fields the endpoint does not know, instead of silently ignoring them."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({name: [_("Unknown field.")] for name in unknown})
        return attrs


def unicode_text(value: str) -> None:
    """Refuse text that is not valid Unicode (an unpaired surrogate such as "\\ud800" from JSON)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError(_("Must be valid Unicode text (no unpaired surrogates).")) from None


class LoginSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False, validators=[unicode_text])
    password = serializers.CharField(max_length=4096, trim_whitespace=False, write_only=True, validators=[unicode_text])


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class RefreshSerializer(StrictSerializer):
    refresh = serializers.CharField(max_length=TOKEN_MAX_LENGTH, trim_whitespace=False)


class VerifySerializer(StrictSerializer):
    token = serializers.CharField(max_length=TOKEN_MAX_LENGTH, trim_whitespace=False)


class VerifiedTokenSerializer(serializers.Serializer):
    token_type = serializers.CharField()
    user_id = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class LogoutSerializer(StrictSerializer):
    refresh = serializers.CharField(max_length=TOKEN_MAX_LENGTH, trim_whitespace=False, required=False)
    all = serializers.BooleanField(default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        # "all" with the caller's own refresh token still means every session.
        if not attrs["all"] and "refresh" not in attrs:
            raise serializers.ValidationError(_('Give "refresh" (this session) or "all": true (every session).'))
        return attrs


class LogoutResultSerializer(serializers.Serializer):
    revoked_sessions = serializers.IntegerField()


class MeSerializer(serializers.Serializer):
    """The caller's account. Declared field by field: a ModelSerializer rebuilds its fields from the
    model on every request, which cost more than the user lookup itself."""

    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)
    # Not an EmailField: its schema says `format: email`, and many accounts have no address ("").
    email = serializers.CharField(read_only=True, help_text="The account's e-mail address; empty when it has none.")
    first_name = serializers.CharField(read_only=True)
    last_name = serializers.CharField(read_only=True)
    is_staff = serializers.BooleanField(read_only=True)
    date_joined = serializers.DateTimeField(read_only=True)
    last_login = serializers.DateTimeField(read_only=True, allow_null=True)


_DATETIME = serializers.DateTimeField()


def me_representation(user: Any) -> dict[str, Any]:
    """The caller's account as `MeSerializer` gives it, built as a plain dict.

    `GET /api/auth/me/` answers every authenticated client's first call, and a serializer per
    request deep-copies its eight declared fields: more than the rest of the answer costs. The
    serializer stays the documented shape (the OpenAPI schema); a test holds the two equal.
    """
    return {
        "id": user.pk,
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_staff": user.is_staff,
        "date_joined": _DATETIME.to_representation(user.date_joined),
        "last_login": _DATETIME.to_representation(user.last_login) if user.last_login else None,
    }
