"""Every answer under /api/ is JSON `{detail, code}`, and no API path redirects to add its slash."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def assert_json_error(response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["detail"]


def test_a_disallowed_host_is_answered_in_json():
    assert_json_error(APIClient().get("/api/tasks/", HTTP_HOST="evil.example"), 400, "bad_request")


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100)
def test_a_body_over_djangos_limit_read_outside_drf_is_answered_in_json(client):
    response = client.post("/api/auth/token/", {"username": "x" * 200, "password": "y"})  # a form, not JSON

    assert response.status_code in (400, 413, 415)
    assert response["Content-Type"].startswith("application/json")


def test_an_unknown_api_path_is_a_json_404():
    assert_json_error(APIClient().get("/api/no-such-thing/"), 404, "not_found")
    assert_json_error(APIClient().get("/api/no-such-thing"), 404, "not_found")


@override_settings(DEBUG=True)
def test_even_in_debug_an_unknown_api_path_is_a_json_404():
    assert_json_error(APIClient().get("/api/no-such-thing/"), 404, "not_found")


def test_post_without_the_trailing_slash_creates_the_task_instead_of_redirecting(client_for, alice, default_queue):
    response = client_for(alice).post("/api/tasks", {"task_type": "echo"}, format="json")

    assert response.status_code == 201
    assert response.json()["task_type"] == "echo"


@pytest.mark.parametrize(
    "path", ["/api/auth/me", "/api/tasks", "/api/queues", "/api/queues/default", "/api/tasks/statistics"]
)
def test_every_api_path_answers_without_its_slash(client_for, alice, default_queue, path):
    assert client_for(alice).get(path).status_code == 200


def test_a_crash_under_api_is_a_json_500(client_for, alice, monkeypatch):
    def crash(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("tasks.selectors.task_statistics", crash)
    api = client_for(alice)
    api.raise_request_exception = False

    assert_json_error(api.get("/api/tasks/statistics"), 500, "server_error")


def test_the_admin_keeps_its_html_pages(client):
    response = client.get("/admin/no-such-page/")
    assert not response["Content-Type"].startswith("application/json")
