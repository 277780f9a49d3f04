"""The API's documented error bodies, shared by every app's OpenAPI annotations."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, naming the field when one is at fault.")
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. `not_found`, `conflict`.")


class ValidationErrorSerializer(ErrorSerializer):
    errors = serializers.JSONField(
        required=False, help_text="Validation errors only: every message by field (`tasks.<index>.<field>` in bulk)."
    )


class ConflictSerializer(ErrorSerializer):
    status = serializers.CharField(help_text="The task's current status.")


_ERRORS: dict[int, tuple[type[serializers.Serializer], str]] = {
    400: (ValidationErrorSerializer, "Invalid input (`invalid`) or malformed JSON (`parse_error`); nothing written."),
    401: (ErrorSerializer, "Missing, invalid, expired or revoked token."),
    403: (ErrorSerializer, "Authenticated but not allowed (`permission_denied`)."),
    404: (ErrorSerializer, "No such object, or not yours (`not_found`)."),
    409: (ConflictSerializer, "The task's state does not allow this (`conflict`)."),
    413: (ErrorSerializer, "Payload or body too large (`payload_too_large`); nothing written."),
    415: (ErrorSerializer, "Body is not `application/json` (`unsupported_media_type`)."),
    429: (
        ErrorSerializer,
        "Too many login attempts (`throttled`) or a queue's per-user active-task limit reached "
        "(`quota_exceeded`); retry after `Retry-After` seconds. Nothing written.",
    ),
    503: (ErrorSerializer, "Database unavailable (`database_unavailable`); retry after `Retry-After` seconds."),
}


def error_responses(*statuses: int, public: bool = False) -> dict[int, OpenApiResponse]:
    """Return the documented error answers: `statuses` plus 401 (unless public) and 503."""
    wanted = {*statuses, 503} | (set() if public else {401})
    return {code: OpenApiResponse(_ERRORS[code][0], description=_ERRORS[code][1]) for code in sorted(wanted)}
