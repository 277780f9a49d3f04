"""Every endpoint parses JSON with the bounded parser: odd bodies are 400/413 JSON, never a 500."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PUBLIC_ENDPOINTS = ["/api/auth/token/", "/api/auth/token/refresh/", "/api/auth/token/verify/"]
NESTED = "[" * 2000  # 2 KB: RecursionError in the stock parser


@pytest.mark.parametrize("path", PUBLIC_ENDPOINTS)
def test_deeply_nested_json_on_a_public_endpoint_is_a_parse_error(path):
    response = APIClient().post(path, NESTED, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_deeply_nested_json_on_logout_is_a_parse_error(client_for, alice):
    response = client_for(alice).post("/api/auth/logout/", NESTED, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
@pytest.mark.parametrize("path", PUBLIC_ENDPOINTS)
def test_an_oversized_body_on_a_public_endpoint_is_413_json(path):
    response = APIClient().post(path, '{"token": "' + "x" * 4096 + '"}', content_type="application/json")

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("number", ["1e400", "-1e400", "Infinity", "NaN"])
def test_numbers_no_database_can_store_are_a_parse_error(client_for, alice, default_queue, number):
    body = '{"task_type": "echo", "payload": {"x": NUMBER}}'.replace("NUMBER", number)
    response = client_for(alice).post("/api/tasks/", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
