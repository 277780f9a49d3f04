"""Every API error is JSON with `detail` and a stable `code`, whatever raised it."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView


def raising(exc: Exception) -> type[APIView]:
    class Boom(APIView):
        permission_classes = [AllowAny]
        authentication_classes: list = []

        def get(self, request):
            raise exc

    return Boom


def call(exc: Exception) -> Response:
    response = raising(exc).as_view()(APIRequestFactory().get("/x/"))
    if not hasattr(response, "data"):  # the 503 is a finished JsonResponse, not a DRF Response
        response.data = json.loads(response.content)
    return response


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (Http404("nope"), 404, "not_found"),
        (PermissionDenied(), 403, "permission_denied"),
        (exceptions.NotFound(), 404, "not_found"),
        (exceptions.MethodNotAllowed("DELETE"), 405, "method_not_allowed"),
        (exceptions.Throttled(wait=7), 429, "throttled"),
        (OperationalError(2006, "MySQL server has gone away"), 503, "database_unavailable"),
    ],
)
def test_errors_carry_detail_and_code(exc, status, code):
    response = call(exc)
    assert response.status_code == status
    assert response.data["code"] == code
    assert response.data["detail"]


def test_validation_errors_name_the_field_and_keep_every_message():
    response = call(exceptions.ValidationError({"priority": ["Ensure this value is less than or equal to 100."]}))
    assert response.status_code == 400
    assert response.data["code"] == "invalid"
    assert response.data["detail"].startswith("priority: ")
    assert response.data["errors"] == {"priority": ["Ensure this value is less than or equal to 100."]}


def test_database_unavailable_says_when_to_retry():
    response = call(OperationalError(2013, "Lost connection"))
    assert response["Retry-After"].isdigit()


def test_throttled_says_when_to_retry():
    assert call(exceptions.Throttled(wait=7))["Retry-After"] == "7"
