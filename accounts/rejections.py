"""Log and count every refused token the same way, so one log line tells an operator why."""

from __future__ import annotations

import logging
from typing import NoReturn

from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from accounts.errors import TOKEN_MISSING, TokenAuthenticationFailed, TokenRejected
from core import metrics
from core.request_context import get_request_id

logger = logging.getLogger("taskhub.auth")

REJECTION_MARKER = "❌ Token验证失败"
SLOW_LOOKUP_MARKER = "⚠️ 用户认证耗时过长"
# Headers a load balancer or reverse proxy adds: their presence without `Authorization` suggests
# the proxy dropped it (a cause of the old system's spurious 401s).
PROXY_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Real-IP", "Via")
# Set on the request once its rejection is logged and counted, so nothing counts it twice.
REJECTED_ATTR = "taskhub_token_rejection"


def client_address(request: HttpRequest | Request) -> str:
    """Return the client's address as DRF's throttles see it (honours NUM_PROXIES)."""
    return BaseThrottle().get_ident(request) or "?"


def proxy_headers(request: HttpRequest | Request) -> list[str]:
    """Return the proxy headers present on the request."""
    return [name for name in PROXY_HEADERS if name in request.headers]


def log_rejection(request: HttpRequest | Request, rejection: TokenRejected, *, hint: str = "") -> None:
    """Log `❌ Token验证失败: <reason>` with its context (never the token) and count the 401."""
    metrics.AUTH_FAILURES.labels(code=rejection.code).inc()
    setattr(request, REJECTED_ATTR, rejection.code)
    logger.warning(
        "%s: %s [code=%s request_id=%s path=%s client=%s jti=%s kid=%s]%s",
        REJECTION_MARKER,
        rejection.reason,
        rejection.code,
        get_request_id(),
        request.path,
        client_address(request),
        rejection.jti or "-",
        rejection.kid or "-",
        f" hint: {hint}" if hint else "",
    )


def reject(request: HttpRequest | Request, rejection: TokenRejected) -> NoReturn:
    """Log and count `rejection`, then raise the 401 that carries its code."""
    log_rejection(request, rejection)
    raise TokenAuthenticationFailed(rejection.code) from rejection


def log_missing_token(request: HttpRequest | Request, reason: str) -> None:
    """Log and count a protected request refused for want of a bearer token."""
    seen = proxy_headers(request)
    hint = (
        f"proxy headers present ({', '.join(seen)}) but no Authorization header: "
        "a proxy or load balancer may be stripping Authorization"
        if seen and "Authorization" not in request.headers
        else ""
    )
    log_rejection(request, TokenRejected(TOKEN_MISSING, reason), hint=hint)
