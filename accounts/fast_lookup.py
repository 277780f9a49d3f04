"""The `user_lookup` shortcut: the user lookup compiled once by the ORM, then run on a plain cursor.

Compiling the lookup's ORM query (filter + Exists subquery) and building the user through a
queryset cost several times more CPU per request than running the query. The SQL never changes,
so the ORM compiles it once per process with stand-ins for its two parameters, and each request
runs it on a plain cursor, converting the row with the very converters the ORM would have applied.

It leans on the ORM's compiler internals (`Query.get_compiler`, `SQLCompiler.as_sql`, `.select`,
`.get_converters`) and on `Model.from_db`; the plain version is `accounts.selectors._find_user`.
Both are checked to return the same user, fields and flag (accounts/tests/test_selectors.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Exists, OuterRef
from rest_framework_simplejwt.settings import api_settings

from accounts.models import TokenFamily

# Stand-ins for the two parameters while the ORM compiles the lookup once per process.
_USER_SENTINEL = -918273645
_FAMILY_SENTINEL = -546372819


def find_user(*, user_id: Any, family_id: int) -> Any:
    """Return the user (with `taskhub_family_revoked` set) or None: one statement, no ORM compilation."""
    return _compiled_lookup(DEFAULT_DB_ALIAS).run(DEFAULT_DB_ALIAS, user_id=user_id, family_id=family_id)


@dataclass(frozen=True)
class _CompiledLookup:
    """The user lookup as the ORM compiles it, kept so that a request only runs it."""

    sql: str
    params: tuple[Any, ...]
    field_names: tuple[str, ...]  # the model's columns, in the order selected
    converters: tuple[tuple[int, tuple[Callable[..., Any], ...], Any], ...]  # (column, converters, expression)

    def run(self, alias: str, *, user_id: Any, family_id: int) -> Any:
        values = {_USER_SENTINEL: user_id, _FAMILY_SENTINEL: family_id}
        params = [values.get(param, param) if isinstance(param, int) else param for param in self.params]
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
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

    Refuses (RuntimeError) a compilation whose parameters or columns are not the expected ones: a
    Django release that compiles the query differently fails loudly on the first request.
    """
    live = TokenFamily.objects.filter(pk=_FAMILY_SENTINEL, user_id=OuterRef("pk"), revoked_at__isnull=True)
    user_model = get_user_model()
    query = (
        user_model._default_manager.filter(**{api_settings.USER_ID_FIELD: _USER_SENTINEL})
        .annotate(taskhub_family_revoked=~Exists(live))
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
