"""simplejwt's tokens, signed with a `kid` header and decoded into precise rejection reasons."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from datetime import timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import jwt
from django.utils.crypto import salted_hmac
from rest_framework_simplejwt import settings as simplejwt_settings
from rest_framework_simplejwt import tokens
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.exceptions import (
    ExpiredTokenError,
    TokenBackendError,
    TokenBackendExpiredToken,
    TokenError,
)
from rest_framework_simplejwt.settings import api_settings

from accounts.errors import TOKEN_EXPIRED, TOKEN_INVALID, TokenRejected
from accounts.fingerprint import key_fingerprint

# Pinned: never taken from the token's header, never configurable to `none` or an asymmetric alg.
ALGORITHM = "HS256"
FAMILY_CLAIM = "fam"
PASSWORD_CLAIM = "pwd"

# Tokens whose signature and claims were verified, per signing key and leeway: a client sends the
# same access token with every request for its lifetime, and verifying it again each time was the
# largest CPU cost of an authenticated request. Bounded; only tokens that passed every check enter.
VERIFIED_TOKENS_CACHED = 4096
# Keyed fingerprints of password hashes (one HMAC per request otherwise), per signing key.
FINGERPRINTS_CACHED = 4096

_BASE64URL_SEGMENT = re.compile(rb"[A-Za-z0-9_-]+={0,2}")
_PRINTABLE_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


class KeyIdTokenBackend(TokenBackend):
    """simplejwt's backend that writes the key fingerprint as `kid` and names the key it expected."""

    def __init__(self, signing_key: str, leeway: timedelta) -> None:
        super().__init__(ALGORITHM, signing_key, leeway=leeway)
        self.kid = key_fingerprint(signing_key)
        self._verified = lru_cache(maxsize=VERIFIED_TOKENS_CACHED)(self._verify)

    def encode(self, payload: dict[str, Any]) -> str:
        return jwt.encode(payload, self.prepared_signing_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def decode(self, token: Any, verify: bool = True) -> dict[str, Any]:
        """Return the token's claims; with `verify`, only once its header, signature and claims pass.

        A token this backend verified before (the very same string, so the very same signature)
        is not verified again: a fresh copy of its claims comes from memory. What changes with
        time is checked again on every use, here (`exp`, as PyJWT checks it, against this
        request's clock) and by the token class (`Token.verify`); what changes with the database
        (user, family revoked, password) by the user lookup that follows. A rejected token is
        never remembered: it is checked again.
        """
        if not verify or not isinstance(token, str | bytes):
            return self._decode(token, verify=verify)
        claims = dict(self._verified(token))
        if "exp" in claims and int(claims["exp"]) <= _epoch_seconds() - self.get_leeway().total_seconds():
            raise TokenRejected(TOKEN_EXPIRED, "token expired", kid=self.kid, jti=peek_jti(token))
        return claims

    def cache_info(self) -> Any:
        """Return the hits, misses and size of the verified tokens' cache (functools' `cache_info`)."""
        return self._verified.cache_info()

    def _verify(self, token: str | bytes) -> MappingProxyType:
        return MappingProxyType(self._decode(token, verify=True))

    def _decode(self, token: Any, verify: bool) -> dict[str, Any]:
        header = _unverified_header(token)
        kid = _loggable(header.get("kid"))
        if verify and header.get("alg") != ALGORITHM:
            raise TokenRejected(
                TOKEN_INVALID, f"algorithm {_loggable(header.get('alg'))!r} is not {ALGORITHM}", kid=kid
            )
        if verify and header.get("kid") != self.kid:
            raise TokenRejected(
                TOKEN_INVALID,
                f"signed with another key: token kid={kid or 'none'}, this server's kid={self.kid} "
                "(is JWT_SECRET_KEY the same on every instance?)",
                kid=kid,
                jti=peek_jti(token),
            )
        try:
            return super().decode(token, verify=verify)
        except TokenBackendExpiredToken as exc:
            raise TokenRejected(TOKEN_EXPIRED, "token expired", kid=kid, jti=peek_jti(token)) from exc
        except TokenBackendError as exc:
            raise TokenRejected(TOKEN_INVALID, _describe(exc.__cause__), kid=kid, jti=peek_jti(token)) from exc


@lru_cache(maxsize=4)
def _backend(signing_key: str, leeway: timedelta) -> KeyIdTokenBackend:
    return KeyIdTokenBackend(signing_key, leeway)


def get_token_backend() -> KeyIdTokenBackend:
    """Return the backend for the current SIMPLE_JWT settings (they may change under tests)."""
    return _backend(signing_key(), leeway())


def signing_key() -> str:
    """Return the current signing key (simplejwt rebinds its settings object when they change)."""
    return simplejwt_settings.api_settings.SIGNING_KEY


def leeway() -> timedelta:
    """Return the tolerated clock skew."""
    value = simplejwt_settings.api_settings.LEEWAY
    return value if isinstance(value, timedelta) else timedelta(seconds=value or 0)


def current_kid() -> str:
    """Return the fingerprint of this process's signing key (the `kid` it writes)."""
    return get_token_backend().kid


class _KeyIdBackendMixin:
    payload: dict[str, Any]

    @property
    def token_backend(self) -> KeyIdTokenBackend:
        return get_token_backend()

    def check_exp(self, claim: str = "exp", current_time: Any = None) -> None:
        """simplejwt's check, raising `ExpiredTokenError` for an `exp` that has passed.

        A claim no datetime can hold is a `TokenError` (401 `token_invalid`), not a 500.
        When `exp` passes between PyJWT's check and this one, this check is the one that finds the
        token expired; a client must still be told `token_expired`, not `token_invalid`.
        """
        try:
            super().check_exp(claim, current_time)  # type: ignore[misc]
        except ExpiredTokenError:
            raise
        except (OverflowError, OSError, ValueError, TypeError) as exc:
            # Not a time any clock can show (`exp` in the year 10000 and beyond, or not a number).
            raise TokenError(f"'{claim}' claim is not a valid time") from exc
        except TokenError as exc:
            if claim != "exp" or claim not in self.payload:
                raise
            raise ExpiredTokenError(str(exc)) from exc


class AccessToken(_KeyIdBackendMixin, tokens.AccessToken):
    """A bearer access token."""


class RefreshToken(_KeyIdBackendMixin, tokens.RefreshToken):
    """A refresh token of a family; revocation is decided under the family's lock, not here."""

    access_token_class = AccessToken

    def check_blacklist(self) -> None:
        # A rotated (blacklisted) token is still honoured inside the reuse grace: services decide.
        return None


class AnyToken(_KeyIdBackendMixin, tokens.UntypedToken):
    """An access or refresh token, for the verify endpoint."""


def decode(raw: str | bytes, token_class: type[tokens.Token]) -> tokens.Token:
    """Return the validated token or raise `TokenRejected` saying precisely why not."""
    try:
        return token_class(raw)
    except TokenRejected:
        raise
    except ExpiredTokenError as exc:
        raise TokenRejected(TOKEN_EXPIRED, "token expired", jti=peek_jti(raw), kid=peek_kid(raw)) from exc
    except TokenError as exc:
        raise TokenRejected(TOKEN_INVALID, str(exc), jti=peek_jti(raw), kid=peek_kid(raw)) from exc


def refresh_lifetime() -> timedelta:
    """Return the lifetime of a refresh token."""
    return simplejwt_settings.api_settings.REFRESH_TOKEN_LIFETIME


def password_fingerprint(user: Any) -> str:
    """Return a claim that changes whenever the user's password does (keyed: not a crackable hash)."""
    return hash_fingerprint(user.password)


def hash_fingerprint(password_hash: str) -> str:
    """Return the keyed fingerprint of a stored password hash."""
    return _keyed_fingerprint(password_hash, signing_key())


@lru_cache(maxsize=FINGERPRINTS_CACHED)
def _keyed_fingerprint(password_hash: str, key: str) -> str:
    # Every authenticated request compares its token's claim with this: computed once per hash.
    return salted_hmac("taskhub.accounts.password", password_hash, secret=key, algorithm="sha256").hexdigest()[:20]


def peek_jti(raw: Any) -> str:
    """Return the (unverified, sanitised) `jti` of a token for logs; never the token itself."""
    try:
        payload = jwt.decode(raw, options={"verify_signature": False})
    except (jwt.InvalidTokenError, RecursionError):
        return ""
    return _loggable(payload.get(api_settings.JTI_CLAIM)) if isinstance(payload, dict) else ""


def peek_kid(raw: Any) -> str:
    """Return the (unverified, sanitised) `kid` header of a token for logs."""
    try:
        return _loggable(_unverified_header(raw).get("kid"))
    except TokenRejected:
        return ""


def _unverified_header(token: Any) -> dict[str, Any]:
    """Return the token's header without verifying anything.

    Only the header segment is decoded: PyJWT's `get_unverified_header` validates all three
    segments character by character, which doubled the cost of every authenticated request (the
    full token is validated once anyway, by the signature check that follows).
    """
    raw = token.encode() if isinstance(token, str) else token
    if not isinstance(raw, bytes) or raw.count(b".") != 2:
        raise TokenRejected(TOKEN_INVALID, "malformed token (not a JWT)")
    segment = raw.split(b".", 1)[0]
    if not _BASE64URL_SEGMENT.fullmatch(segment):
        raise TokenRejected(TOKEN_INVALID, "malformed token (not a JWT)")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment.rstrip(b"=") + b"=" * (-len(segment.rstrip(b"=")) % 4)))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise TokenRejected(TOKEN_INVALID, "malformed token (not a JWT)") from exc
    return header if isinstance(header, dict) else {}


def _epoch_seconds() -> float:
    """Return the wall clock in seconds since the epoch (the clock PyJWT checks `exp` against)."""
    return time.time()


def _loggable(value: Any) -> str:
    """Keep attacker-controlled header/claim values short and printable in log lines."""
    text = str(value) if value is not None else ""
    return text if _PRINTABLE_ID.match(text) else ("<unprintable>" if text else "")


def _describe(cause: BaseException | None) -> str:
    if isinstance(cause, jwt.InvalidSignatureError):
        return "bad signature (tampered token, or signed by another key with a forged kid)"
    if isinstance(cause, jwt.ImmatureSignatureError):
        return "issued in the future beyond the allowed clock skew (JWT_LEEWAY_SECONDS)"
    if isinstance(cause, jwt.InvalidAlgorithmError):
        return f"algorithm not allowed (only {ALGORITHM})"
    if isinstance(cause, jwt.DecodeError):
        return "malformed token"
    return f"invalid token ({type(cause).__name__ if cause else 'unknown'})"
