"""One JSON error shape for the whole API: `{"detail": ..., "code": ...}`."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import defaults
from rest_framework import exceptions

from core import metrics
from core.db.errors import is_connection_lost, is_database_unavailable
from core.db.session import handle_database_error, under_test_transaction

logger = logging.getLogger("taskhub.api")

DATABASE_UNAVAILABLE = "database_unavailable"
DATABASE_UNAVAILABLE_DETAIL = gettext_lazy("The database is temporarily unavailable; retry shortly.")
# What DRF's permissions raise for a request without credentials gets the API's own code; the
# accounts app uses the same code and wording for the header it cannot find.
TOKEN_MISSING = "token_missing"
TOKEN_MISSING_DETAIL = gettext_lazy("Authentication credentials were not provided.")


def database_unavailable_response(exc: BaseException, *, where: str) -> JsonResponse:
    """Answer 503 `database_unavailable` for `exc`: the one place that builds it.

    Logs and counts the failure and closes a lost connection so the next request reconnects.
    Used by the API's exception handler, the connection middleware and the 500 handler alike.
    """
    logger.error("database unavailable during %s: %s", where, exc)
    handle_database_error(exc)
    metrics.SERVICE_UNAVAILABLE.labels(code=DATABASE_UNAVAILABLE).inc()
    retry_after = str(getattr(settings, "DB_UNAVAILABLE_RETRY_AFTER_SECONDS", 5))
    body = {"detail": str(DATABASE_UNAVAILABLE_DETAIL), "code": DATABASE_UNAVAILABLE}
    return JsonResponse(body, status=503, headers={"Retry-After": retry_after})


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """Render every API error as JSON with `detail` and a stable `code`."""
    # Imported here: rest_framework.views loads the authentication classes, which import this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    if is_database_unavailable(exc):
        retried = _read_again(exc, context)
        if retried is not None:
            return retried
        return database_unavailable_response(exc, where=_path(context))

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": first_message(exc.detail), "code": "invalid", "errors": exc.detail}
    elif isinstance(exc, exceptions.NotAuthenticated):
        # What DRF's permissions raise for a request without a token: TaskHub's code and wording.
        response.data = {"detail": str(TOKEN_MISSING_DETAIL), "code": TOKEN_MISSING}
    elif isinstance(exc, exceptions.APIException):
        response.data = _detail_and_code(exc)
    elif isinstance(exc, Http404):
        response.data = {"detail": _("Not found."), "code": "not_found"}
    elif isinstance(exc, DjangoPermissionDenied):
        response.data = {"detail": _("You do not have permission to perform this action."), "code": "permission_denied"}
    return response


READ_RETRIED_ATTR = "taskhub_read_retried"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _read_again(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """Run a read-only API request once more after its connection was lost; None when it must not.

    A connection killed mid-request (server restart, KILL, a proxy's idle cut) loses nothing a
    read had done, so one fresh attempt on a new connection answers the client instead of a 503.
    Never a write (it may have reached the server), never twice, never inside a transaction the
    request opened (its work is gone with the connection).
    """
    request, view = context.get("request"), context.get("view")
    http_request = getattr(request, "_request", None)
    if (
        view is None
        or http_request is None
        or http_request.method not in SAFE_METHODS
        or not is_connection_lost(exc)
        or getattr(http_request, READ_RETRIED_ATTR, False)
        or (connection.in_atomic_block and not under_test_transaction(connection))
    ):
        return None
    setattr(http_request, READ_RETRIED_ATTR, True)
    logger.warning("connection lost during %s %s (%s): reading again once", http_request.method, http_request.path, exc)
    handle_database_error(exc)  # closes the dead connection: the retry opens a new one
    return view.dispatch(http_request, *context.get("args", ()), **context.get("kwargs", {}))


def _detail_and_code(exc: exceptions.APIException) -> dict[str, Any]:
    detail = exc.detail
    if isinstance(detail, dict):
        # Exceptions raised with a dict (e.g. {"detail": ..., "code": ...}) keep their extra keys.
        data = {key: value for key, value in detail.items()}
        data.setdefault("code", exc.default_code)
        data["code"] = str(data["code"])
        data.setdefault("detail", str(exc.default_detail))
        return data
    return {"detail": str(detail), "code": getattr(detail, "code", None) or exc.default_code}


def first_message(detail: Any, prefix: str = "") -> str:
    """Return a readable first message that names the field it concerns."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            name = field if field == "non_field_errors" or not prefix else f"{prefix}.{field}"
            message = first_message(value, name if field != "non_field_errors" else prefix)
            return message
    if isinstance(detail, list) and detail:
        return first_message(detail[0], prefix)
    return f"{prefix}: {detail}" if prefix else str(detail)


def _path(context: dict[str, Any]) -> str:
    request = context.get("request")
    return getattr(request, "path", "?")


def _wants_json(request: HttpRequest) -> bool:
    return not request.path.startswith("/admin/")


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Answer unknown URLs with the API's JSON error shape (the admin keeps its HTML page)."""
    if not _wants_json(request):
        return defaults.page_not_found(request, exception or Exception())
    return JsonResponse({"detail": _("Not found."), "code": "not_found"}, status=404)


def json_server_error(request: HttpRequest) -> HttpResponse:
    """Answer unexpected failures with JSON instead of an HTML page (the admin keeps its page).

    A database failure raised outside any view (in a middleware, say) reaches this handler
    too; it answers 503 `database_unavailable` like everywhere else, never a 500.
    """
    exc = sys.exc_info()[1]
    if exc is not None and is_database_unavailable(exc):
        return database_unavailable_response(exc, where=request.path)
    if not _wants_json(request):
        return defaults.server_error(request)
    return JsonResponse({"detail": _("Internal server error."), "code": "server_error"}, status=500)
