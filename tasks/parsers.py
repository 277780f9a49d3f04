"""A JSON parser that reads a bounded body and never lets odd input become a 500."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

from tasks.errors import PayloadTooLargeError


class BoundedJSONParser(BaseParser):
    """Parse JSON of at most `max_bytes` (default: DATA_UPLOAD_MAX_MEMORY_SIZE), else 413.

    Not a JSONParser subclass on purpose: for those DRF reads `request.body`, whose size check
    raises RequestDataTooBig (a 400 HTML page, not JSON), and a deeply nested document's
    RecursionError would escape as a 500.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer
    max_bytes: int | None = None

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = self.max_bytes or settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLargeError(_("The request body is larger than %(limit)d bytes.") % {"limit": limit})
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.loads(raw.decode(encoding), parse_constant=_refuse_constant)
        except (ValueError, LookupError, RecursionError) as exc:
            raise ParseError(_("JSON parse error - %(error)s") % {"error": exc}) from None


def bounded_json_parser(max_bytes: int) -> type[BoundedJSONParser]:
    """Return a BoundedJSONParser class with its own body limit."""
    return type("BoundedJSONParser", (BoundedJSONParser,), {"max_bytes": max_bytes})


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")
