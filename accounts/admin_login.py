"""The admin's login page behind the same database-counted throttles as the API's login."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from rest_framework.exceptions import Throttled

from accounts.throttles import LoginAccountThrottle, LoginAddressThrottle


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """Django admin's login view; a POST counts against the address and (when it fails) the account.

    Wired at /admin/login/ ahead of `admin.site.urls`, so the admin's own URL name still works.
    """
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    address_limit = LoginAddressThrottle()
    account_limit = LoginAccountThrottle()
    try:
        if not address_limit.allow_request(request, None):
            raise Throttled(wait=address_limit.wait())
        account_limit.charge(request, _username(request))
    except Throttled as exc:
        return _too_many_attempts(exc.wait)
    response = admin.site.login(request, extra_context)
    if request.user.is_authenticated and response.status_code in (301, 302, 303):
        account_limit.refund()
    return response


def _username(request: HttpRequest) -> str:
    username = request.POST.get("username", "")
    try:
        username.encode("utf-8")
    except UnicodeEncodeError:
        return ""
    return username


def _too_many_attempts(wait: float | None) -> HttpResponse:
    seconds = int(wait or 1)
    message = _("Too many login attempts; try again in %(seconds)d seconds.") % {"seconds": seconds}
    return HttpResponse(
        message, status=429, content_type="text/plain; charset=utf-8", headers={"Retry-After": str(seconds)}
    )
