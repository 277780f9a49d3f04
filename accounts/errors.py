"""Why a token was refused: one exception, a stable code a client can act on, a reason for the log."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status

from core.errors import TOKEN_MISSING, TOKEN_MISSING_DETAIL

TOKEN_EXPIRED = "token_expired"
TOKEN_INVALID = "token_invalid"
TOKEN_REVOKED = "token_revoked"
USER_INACTIVE = "user_inactive"
USER_NOT_FOUND = "user_not_found"
PASSWORD_CHANGED = "password_changed"

# What the client reads in `detail`, in its language (Accept-Language); the log gets the precise
# operator-facing reason, always in English.
CLIENT_DETAILS = {
    TOKEN_MISSING: TOKEN_MISSING_DETAIL,
    TOKEN_EXPIRED: _("The token has expired; refresh it and retry."),
    TOKEN_INVALID: _("The token is not valid."),
    TOKEN_REVOKED: _("The token has been revoked; log in again."),
    USER_INACTIVE: _("The user account is disabled."),
    USER_NOT_FOUND: _("The user of this token no longer exists."),
    PASSWORD_CHANGED: _("The password was changed after this token was issued; log in again."),
}

# RFC 6750 §3: a request that carried no credentials gets the challenge without an error code.
CHALLENGE = 'Bearer realm="api"'
CHALLENGE_INVALID = 'Bearer realm="api", error="invalid_token"'


class TokenRejected(Exception):
    """A token that must be answered with 401 `code`; `reason` is for the log only."""

    def __init__(self, code: str, reason: str, *, jti: str = "", kid: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.jti = jti
        self.kid = kid


class TokenAuthenticationFailed(exceptions.AuthenticationFailed):
    """401 carrying one of the codes above."""

    def __init__(self, code: str) -> None:
        super().__init__(detail=CLIENT_DETAILS[code], code=code)


class InvalidCredentials(exceptions.APIException):
    """400 for a wrong username or password: the caller holds no token, so this is not a 401 (RFC 6749 §5.2)."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = _("No active account found with the given username and password.")
    default_code = "invalid_credentials"
