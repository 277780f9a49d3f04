"""The id of the request (or worker task) being served, for every log line it produces."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar, Token

NO_REQUEST_ID = "-"
_request_id: ContextVar[str] = ContextVar("taskhub_request_id", default=NO_REQUEST_ID)

# Incoming ids are echoed into logs and headers: keep them short and printable.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def get_request_id() -> str:
    """Return the id of the current request or task ("-" outside one)."""
    return _request_id.get()


def set_request_id(value: str) -> Token[str]:
    """Make `value` the current request id; return a token for `reset_request_id`."""
    return _request_id.set(value)


def reset_request_id(token: Token[str]) -> None:
    """Restore the request id that was current before `set_request_id`."""
    _request_id.reset(token)


def clear_request_id(**kwargs: object) -> None:
    """Forget the current request id (connected to `request_finished`)."""
    _request_id.set(NO_REQUEST_ID)


def new_request_id(incoming: str | None = None) -> str:
    """Return the client's `X-Request-ID` when it is sane, else a fresh one."""
    if incoming and _VALID_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdLogFilter(logging.Filter):
    """Add `request_id` to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            # django.request passes the request itself: its id is right even off the request path.
            request = getattr(record, "request", None)
            record.request_id = getattr(request, "request_id", None) or get_request_id()
        return True
