"""The bearer-token authentication every API endpoint uses."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from accounts.errors import CHALLENGE, CHALLENGE_INVALID, TOKEN_INVALID, TokenRejected
from accounts.rejections import REJECTED_ATTR, SLOW_LOOKUP_MARKER, log_missing_token, reject
from accounts.selectors import user_for_token
from accounts.tokens import AccessToken, decode
from core.request_context import get_request_id

logger = logging.getLogger("taskhub.auth")
_SCHEMES = frozenset(scheme.lower().encode() for scheme in api_settings.AUTH_HEADER_TYPES)


class JWTAuthentication(SimpleJWTAuthentication):
    """simplejwt's bearer authentication, with precise 401 codes and the diagnostics of the design.

    No `Authorization` header: returns None (DRF's contract); the permission then answers 401
    `token_missing`. Any bad token: 401 with a code from `accounts.errors`. A database failure
    while loading the user propagates and is answered 503, never 401.
    """

    def authenticate(self, request: Request) -> tuple[Any, Token] | None:
        header = self.get_header(request)
        if header is None:
            return None
        try:
            raw_token = self.get_raw_token(header)
        except AuthenticationFailed:
            reject(request, TokenRejected(TOKEN_INVALID, "malformed Authorization header (expected 'Bearer <token>')"))
        if raw_token is None:
            return None
        try:
            token = self.get_validated_token(raw_token)
            return self._timed_user_lookup(request, token), token
        except TokenRejected as rejection:
            reject(request, rejection)

    def get_raw_token(self, header: bytes) -> bytes | None:
        """Return the token of a `Bearer <token>` header; the scheme is case-insensitive (RFC 7235 §2.1)."""
        parts = header.split()
        if not parts or parts[0].lower() not in _SCHEMES:
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Authorization header must contain two space-delimited values")
        return parts[1]

    def get_validated_token(self, raw_token: bytes) -> Token:
        # Only TaskHub access tokens: a refresh token presented here fails its type check.
        return decode(raw_token, AccessToken)

    def get_user(self, validated_token: Token) -> Any:
        return user_for_token(validated_token)

    def authenticate_header(self, request: Request) -> str:
        """Return the RFC 6750 challenge; DRF calls this only when it is about to answer 401."""
        if getattr(request, REJECTED_ATTR, None):
            return CHALLENGE_INVALID
        header = self.get_header(request)
        if header is None:
            reason = "no Authorization header"
        elif self._raw_token_or_none(header) is None:
            scheme = (header.split() or [b""])[0].decode(errors="replace")[:20]
            reason = f"Authorization header carries no Bearer token (scheme {scheme!r})"
        else:
            # A valid token, yet a view refused the request with 401 itself: nothing to log here.
            return CHALLENGE_INVALID
        log_missing_token(request, reason)
        return CHALLENGE

    def _raw_token_or_none(self, header: bytes) -> bytes | None:
        try:
            return self.get_raw_token(header)
        except AuthenticationFailed:
            return None

    def _timed_user_lookup(self, request: Request, token: Token) -> Any:
        started = time.monotonic()
        try:
            return self.get_user(token)
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            if elapsed_ms > settings.AUTH_SLOW_THRESHOLD_MS:
                logger.warning(
                    "%s: %.0f ms (threshold %s ms) [request_id=%s path=%s user_id=%s jti=%s]",
                    SLOW_LOOKUP_MARKER,
                    elapsed_ms,
                    settings.AUTH_SLOW_THRESHOLD_MS,
                    get_request_id(),
                    request.path,
                    token.get(api_settings.USER_ID_CLAIM, "-"),
                    token.get(api_settings.JTI_CLAIM, "-"),
                )
