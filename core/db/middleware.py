"""Per-request database session hygiene, request ids and request metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from core import metrics
from core.db.errors import is_database_unavailable
from core.db.session import ensure_clean_session
from core.db.session_state import statements_run
from core.errors import database_unavailable_response
from core.request_context import new_request_id, set_request_id


class DatabaseSessionMiddleware:
    """Give each request an id and hand its DB connection on clean, or closed.

    1. Take the client's `X-Request-ID` when sane, else make one; return it on the response.
       It stays current until `request_finished`, so the lines Django logs after the middleware
       chain returns ("Not Found: ...") carry it too.
    2. Notice whether the request touched the connection (an execute wrapper: no query).
    3. At the end of the request (for a streaming response: when it is closed, after its body),
       if it did, roll back any transaction left open (`ensure_clean_session`: one query on MySQL
       at most) and close a connection left with session state (locks, variables: no query).
    4. A database error escaping a view answers 503 `database_unavailable`, and a lost
       connection is closed so the next request reconnects.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = new_request_id(request.headers.get("X-Request-ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        set_request_id(request_id)
        usage = _ConnectionUsage()
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        except BaseException:
            usage.finish(request_id)
            raise
        response["X-Request-ID"] = request_id
        finish = partial(self._finish, request, response, usage, started)
        if response.streaming and getattr(response, "file_to_stream", None) is None:
            # The body is produced while it is sent and may use the connection: wait for it.
            response.streaming_content = _CloseHook(response.streaming_content, finish)
        else:
            finish()
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Answer 503 (not 500) when a plain Django view fails because the database is unavailable."""
        if not is_database_unavailable(exception):
            return None
        return database_unavailable_response(exception, where=request.path)

    def _finish(
        self, request: HttpRequest, response: HttpResponseBase, usage: _ConnectionUsage, started: float
    ) -> None:
        usage.finish(request.request_id)  # type: ignore[attr-defined]
        metrics.observe_request(request, response.status_code, time.perf_counter() - started)


class _CloseHook:
    """Stream a body unchanged and run `on_close` once, when the server closes the response.

    Django calls a streamed iterable's `close()` from `response.close()`, which every WSGI
    server calls after sending the body (or giving up on it), so this runs even if the body
    was never iterated.
    """

    def __init__(self, content: Iterable[Any], on_close: Callable[[], None]) -> None:
        self.content = content
        self.on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[Any]:
        return iter(self.content)

    def close(self) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()


class _ConnectionUsage:
    """Record whether the default connection ran a query (or was opened) during the request."""

    def __init__(self) -> None:
        self.used = False
        self.raw_at_start = connection.connection
        # Statements run on the raw DB-API connection bypass the wrapper; its cursors count them.
        self.statements_at_start = statements_run(self.raw_at_start)
        connection.execute_wrappers.append(self)

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        self.used = True
        return execute(sql, params, many, context)

    def finish(self, request_id: str) -> None:
        """Stop watching; clean the session if the request used it (never open one to check)."""
        if self in connection.execute_wrappers:
            connection.execute_wrappers.remove(self)
        raw = connection.connection
        if self.used or raw is not self.raw_at_start or statements_run(raw) != self.statements_at_start:
            ensure_clean_session(context_id=request_id)
