"""Reads behind authentication: the token's user, fresh from the database on every request."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Exists, OuterRef
from django.utils.crypto import constant_time_compare
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from accounts.errors import PASSWORD_CHANGED, TOKEN_INVALID, TOKEN_REVOKED, USER_INACTIVE, USER_NOT_FOUND, TokenRejected
from accounts.models import PasswordRehash, TokenFamily
from accounts.tokens import FAMILY_CLAIM, PASSWORD_CLAIM, current_kid, password_fingerprint
from core.db.session import read_checking_connection

# Hasher upgrades between a token's issue and its use: one per Django release at most.
MAX_REHASH_CHAIN = 5


def user_for_token(token: Token) -> Any:
    """Return the token's user, or raise `TokenRejected` (user gone, disabled, family revoked, password changed).

    One query: the user row plus whether the token's family was revoked (one more only for a token
    older than an upgrade of the password's hash). Database errors are left to propagate: the API
    answers them with 503 `database_unavailable`, never with 401.
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
        user = _compiled_lookup(DEFAULT_DB_ALIAS).run(DEFAULT_DB_ALIAS, user_id=lookup_value, family_id=family_id)
    except (ValueError, TypeError, ValidationError):
        raise _rejected(TOKEN_INVALID, f"user id claim {str(user_id)[:40]!r} is malformed", jti) from None

    if user is None:
        raise _rejected(USER_NOT_FOUND, f"user {user_id} no longer exists", jti)
    if not user.is_active:
        raise _rejected(USER_INACTIVE, f"user {user_id} is inactive", jti)
    if user.taskhub_family_revoked:
        raise _rejected(TOKEN_REVOKED, f"token family {family_id} was revoked (logout or reuse)", jti)
    current = password_fingerprint(user)
    if not constant_time_compare(password_claim, current) and not _rehashed(user, password_claim, current):
        raise _rejected(PASSWORD_CHANGED, f"password of user {user_id} changed since the token was issued", jti)
    return user


# Stand-ins for the two parameters while the ORM compiles the lookup once per process.
_USER_SENTINEL = -918273645
_FAMILY_SENTINEL = -546372819


@dataclass(frozen=True)
class _CompiledLookup:
    """The user lookup as the ORM compiles it, kept so that a request only runs it."""

    sql: str
    params: tuple[Any, ...]
    field_names: tuple[str, ...]  # the model's columns, in the order selected
    converters: tuple[tuple[int, tuple[Callable[..., Any], ...], Any], ...]  # (column, converters, expression)

    def run(self, alias: str, *, user_id: Any, family_id: int) -> Any:
        """Return the user (with `taskhub_family_revoked` set) or None: one statement, no ORM compilation."""
        values = {_USER_SENTINEL: user_id, _FAMILY_SENTINEL: family_id}
        params = [values.get(param, param) if isinstance(param, int) else param for param in self.params]
        connection = connections[alias]

        def fetch() -> Any:
            with connection.cursor() as cursor:
                cursor.execute(self.sql, params)
                return cursor.fetchone()

        # The first statement of an API request: it doubles as the connection's health check.
        row = read_checking_connection(fetch) if alias == DEFAULT_DB_ALIAS else fetch()
        if row is None:
            return None
        row = list(row)
        for index, converters, expression in self.converters:
            for convert in converters:
                row[index] = convert(row[index], expression, connection)
        fields = len(self.field_names)
        user = get_user_model().from_db(alias, self.field_names, row[:fields])
        user.taskhub_family_revoked = bool(row[fields])
        return user


@functools.cache
def _compiled_lookup(alias: str) -> _CompiledLookup:
    """Compile the lookup once per process, with its parameters' stand-ins and its columns' converters.

    Compiling this ORM query (filter + Exists subquery) and building the user through a raw
    queryset cost several times more CPU per request than running the query; the SQL never
    changes, so the ORM compiles it once and each request runs it on a plain cursor, converting
    the row with the very converters the ORM would have applied.
    """
    revoked = TokenFamily.objects.filter(pk=_FAMILY_SENTINEL, user_id=OuterRef("pk"), revoked_at__isnull=False)
    user_model = get_user_model()
    query = (
        user_model._default_manager.filter(**{api_settings.USER_ID_FIELD: _USER_SENTINEL})
        .annotate(taskhub_family_revoked=Exists(revoked))
        .query
    )
    compiler = query.get_compiler(alias)
    sql, params = compiler.as_sql()
    if list(params).count(_USER_SENTINEL) != 1 or list(params).count(_FAMILY_SENTINEL) != 1:
        raise RuntimeError(f"unexpected parameters in the user lookup: {params!r}")
    columns = [expression for expression, _sql, _alias in compiler.select]
    field_names = tuple(getattr(getattr(column, "target", None), "attname", "") for column in columns[:-1])
    if field_names != tuple(field.attname for field in user_model._meta.concrete_fields):
        raise RuntimeError(f"unexpected columns in the user lookup: {field_names!r}")
    converters = tuple(
        (index, tuple(functions), expression)
        for index, (functions, expression) in compiler.get_converters(columns).items()
    )
    return _CompiledLookup(sql, tuple(params), field_names, converters)


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
