"""OpenAPI details drf-spectacular cannot infer: strict request bodies, task types, the JWT scheme."""

from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension

from tasks import registry


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
