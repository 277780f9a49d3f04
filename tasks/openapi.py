"""OpenAPI details drf-spectacular cannot infer: error bodies, strict request bodies, the JWT scheme."""

from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from tasks import registry


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
    429: (ErrorSerializer, "A queue's per-user active-task limit is reached (`quota_exceeded`); nothing written."),
    503: (ErrorSerializer, "Database unavailable (`database_unavailable`); retry after `Retry-After` seconds."),
}


def error_responses(*statuses: int, public: bool = False) -> dict[int, OpenApiResponse]:
    """Return the documented error answers: `statuses` plus 401 (unless public) and 503."""
    wanted = {*statuses, 503} | (set() if public else {401})
    return {code: OpenApiResponse(_ERRORS[code][0], description=_ERRORS[code][1]) for code in sorted(wanted)}


class StrictRequestExtension(OpenApiSerializerExtension):
    """Tell clients (and schemathesis) that request bodies refuse undeclared fields."""

    target_class = "tasks.serializers.StrictFieldsMixin"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


class TaskTypeFieldExtension(OpenApiSerializerFieldExtension):
    """List the task types registered when the schema is generated."""

    target_class = "tasks.serializers.TaskTypeField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        schema["enum"] = registry.registered_types()
        return schema


class TaskHubJWTScheme(SimpleJWTScheme):
    """Bearer JWT for TaskHub's authentication class (a simplejwt subclass spectacular cannot match)."""

    target_class = "accounts.authentication.JWTAuthentication"
    # Below any scheme the accounts app may declare for its own class.
    priority = -1
