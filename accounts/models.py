"""Refresh-token families (one per login), their rotation bookkeeping, and login throttle windows.

simplejwt's `OutstandingToken`/`BlacklistedToken` stay the record of every issued and revoked
refresh token; these tables add what rotation with a reuse grace and breach detection need.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken


class RevokeReason(models.TextChoices):
    LOGOUT = "logout", _("Logged out")
    LOGOUT_ALL = "logout_all", _("Logged out everywhere")
    REUSE_DETECTED = "reuse_detected", _("Rotated refresh token reused after the grace")
    PASSWORD_CHANGED = "password_changed", _("Password changed")
    USER_INACTIVE = "user_inactive", _("User deactivated")


class TokenFamily(models.Model):
    """Every refresh token descended from one login; revoking the family ends the session."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="token_families", verbose_name=_("user")
    )
    created_at = models.DateTimeField(_("logged in at"))
    # The newest refresh token's expiry: once past, the whole family is dead and may be purged.
    expires_at = models.DateTimeField(_("expires at"), db_index=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoke_reason = models.CharField(_("revoke reason"), max_length=32, choices=RevokeReason.choices, blank=True)

    class Meta:
        db_table = "accounts_token_family"
        verbose_name = _("token family")
        verbose_name_plural = _("token families")
        # Serves "revoke every family of this user" (logout all).
        indexes = [models.Index(fields=["user", "revoked_at"], name="token_family_user_revoked")]

    def __str__(self) -> str:
        return f"family {self.pk} of user {self.user_id}"


class IssuedRefreshToken(models.Model):
    """One refresh token of a family: when it was rotated, and into which successor."""

    token = models.OneToOneField(
        OutstandingToken,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="taskhub_issue",
        verbose_name=_("outstanding token"),
    )
    family = models.ForeignKey(TokenFamily, on_delete=models.CASCADE, related_name="tokens", verbose_name=_("family"))
    # Set once, by the first rotation; the reuse grace runs from here and never slides.
    rotated_at = models.DateTimeField(_("rotated at"), null=True, blank=True)
    # The successor's exact token string lives in its OutstandingToken row, found by this jti.
    successor_jti = models.CharField(_("successor jti"), max_length=255, blank=True)

    class Meta:
        db_table = "accounts_issued_refresh_token"
        verbose_name = _("issued refresh token")
        verbose_name_plural = _("issued refresh tokens")

    def __str__(self) -> str:
        return f"refresh token {self.token_id} of family {self.family_id}"


class ThrottleWindow(models.Model):
    """Attempts counted in one fixed time window for one throttle key, shared by every process."""

    # sha256 of scope, identity and window start: fixed width, whatever the username holds.
    key = models.CharField(_("key"), max_length=64, unique=True)
    hits = models.PositiveIntegerField(_("hits"), default=1)
    expires_at = models.DateTimeField(_("expires at"), db_index=True)

    class Meta:
        db_table = "accounts_throttle_window"
        verbose_name = _("throttle window")
        verbose_name_plural = _("throttle windows")

    def __str__(self) -> str:
        return f"{self.key[:12]}… {self.hits} hits"


class PasswordRehash(models.Model):
    """A password hash upgraded at login (same password, new hasher or iterations).

    Django re-hashes a password on a successful login when its hasher settings changed (every
    Django release raises the PBKDF2 iterations). That is not a password change: tokens carrying
    the old hash's fingerprint stay valid, found through this row.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, verbose_name=_("user"))
    old_fingerprint = models.CharField(_("old hash fingerprint"), max_length=64)
    new_fingerprint = models.CharField(_("new hash fingerprint"), max_length=64)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)

    class Meta:
        db_table = "accounts_password_rehash"
        verbose_name = _("password rehash")
        verbose_name_plural = _("password rehashes")
        constraints = [
            models.UniqueConstraint(fields=["user", "old_fingerprint"], name="password_rehash_user_old_unique")
        ]

    def __str__(self) -> str:
        return f"user {self.user_id}: {self.old_fingerprint} → {self.new_fingerprint}"
