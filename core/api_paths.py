"""Every answer under /api/ is JSON `{detail, code}`, and no API path redirects to add a slash."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.urls import is_valid_path
from django.utils.translation import gettext_lazy

API_PREFIX = "/api/"
# Headers of an error answer that still mean something once its body is JSON.
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Vary")


class ApiPathMiddleware:
    """Keep /api/ JSON and redirect-free, whatever part of Django answers.

    1. A path without its trailing slash is served as the path with it (`POST /api/tasks`): the
       slash redirect of CommonMiddleware (APPEND_SLASH) would drop a POST's body, and existing
       clients call the seed's paths both ways.
    2. An error answered outside DRF (a disallowed Host, a body over Django's limit, an unknown
       URL, a crash, each an HTML page by default, or Django's debug pages) becomes `{detail,
       code}` with the same status. It sits outside the middleware that raise those errors.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        _serve_without_slash(request)
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
            return _json_error(response)
        return response


def _serve_without_slash(request: HttpRequest) -> None:
    path = request.path_info
    if path.endswith("/"):
        return
    urlconf = getattr(request, "urlconf", None)
    if not is_valid_path(path, urlconf) and is_valid_path(f"{path}/", urlconf):
        request.path_info = f"{path}/"
        request.path = f"{request.path}/"


def _json_error(response: HttpResponseBase) -> JsonResponse:
    status = response.status_code
    code, detail = _ANSWERS.get(status, (None, None))
    if code is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        code, detail = phrase.lower().replace(" ", "_").replace("-", "_"), f"{phrase}."
    json = JsonResponse({"detail": str(detail), "code": code}, status=status)
    for name in KEPT_HEADERS:
        if name in response:
            json[name] = response[name]
    return json


_ANSWERS = {
    400: ("bad_request", gettext_lazy("Bad request.")),
    403: ("permission_denied", gettext_lazy("You do not have permission to perform this action.")),
    404: ("not_found", gettext_lazy("Not found.")),
    405: ("method_not_allowed", gettext_lazy("Method not allowed.")),
    413: ("payload_too_large", gettext_lazy("The request body is too large.")),
    500: ("server_error", gettext_lazy("Internal server error.")),
}
