"""The API's one JSON parser: a bounded body, and odd input is a 400/413, never a 500."""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer


class RequestBodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = gettext_lazy("The request body is too large.")
    default_code = "payload_too_large"


class BoundedJSONParser(BaseParser):
    """Parse JSON of at most `max_bytes` (default: DATA_UPLOAD_MAX_MEMORY_SIZE), else 413.

    Every endpoint's parser (`DEFAULT_PARSER_CLASSES`). Not a JSONParser subclass on purpose:
    for those DRF reads `request.body`, whose size check raises RequestDataTooBig (a 400 HTML
    page, not JSON), and a deeply nested document's RecursionError would escape as a 500.
    Numbers that overflow to infinity (`1e400`) are refused like `NaN`: no database stores them.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer
    max_bytes: int | None = None

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = self.max_bytes or settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestBodyTooLarge(_("The request body is larger than %(limit)d bytes.") % {"limit": limit})
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.loads(raw.decode(encoding), parse_constant=_refuse_constant, parse_float=_finite_float)
        except (ValueError, LookupError, RecursionError) as exc:
            raise ParseError(_("JSON parse error - %(error)s") % {"error": exc}) from None


def bounded_json_parser(max_bytes: int) -> type[BoundedJSONParser]:
    """Return a BoundedJSONParser class with its own body limit."""
    return type("BoundedJSONParser", (BoundedJSONParser,), {"max_bytes": max_bytes})


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value
