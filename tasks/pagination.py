"""Cursor pagination for task lists: stable while rows are inserted, no COUNT(*) per page."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

MAX_ID = 2**63 - 1


class TaskCursorPagination(CursorPagination):
    """Newest first by id: a new task gets a higher id, so it never shifts the pages after it."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdecimal() or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError(
                {
                    self.page_size_query_param: [
                        _("Must be an integer from %(min)d to %(max)d.") % {"min": 1, "max": self.max_page_size}
                    ]
                }
            )
        return int(raw)

    def decode_cursor(self, request: Request) -> Cursor | None:
        # DRF answers a bad cursor with 404 and trusts the position inside it (a forged,
        # non-numeric position would fail in the query): both become a 400 here.
        try:
            cursor = super().decode_cursor(request)
        except NotFound as exc:
            raise _invalid_cursor(self.cursor_query_param) from exc
        if cursor is not None and cursor.position is not None:
            if not cursor.position.isdecimal() or int(cursor.position) > MAX_ID:
                raise _invalid_cursor(self.cursor_query_param)
        return cursor

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size, default=self.page_size)
        return parameters


def _invalid_cursor(name: str) -> ValidationError:
    return ValidationError({name: [_("Invalid cursor.")]})
