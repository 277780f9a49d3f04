"""GET/PATCH /api/queues/: everyone reads, staff pause, resume and change limits."""

from __future__ import annotations

import json

import pytest

from tasks.models import QueueConfig

pytestmark = pytest.mark.django_db

URL = "/api/queues/"


def test_everyone_lists_and_reads_queues(alice_api, default_queue, emails_queue):
    listed = alice_api.get(URL).json()
    assert [q["name"] for q in listed] == ["default", "emails"]
    one = alice_api.get(f"{URL}emails/").json()
    assert (one["name"], one["max_attempts"], one["is_paused"]) == ("emails", 5, False)


def test_an_unknown_queue_is_404(alice_api, staff_api, default_queue):
    assert alice_api.get(f"{URL}nope/").json()["code"] == "not_found"
    assert staff_api.patch(f"{URL}nope/", {"is_paused": True}, format="json").status_code == 404


def test_staff_pause_and_resume_a_queue(staff_api, default_queue):
    paused = staff_api.patch(f"{URL}default/", {"is_paused": True}, format="json")
    assert paused.status_code == 200
    assert paused.json()["is_paused"] is True
    default_queue.refresh_from_db()
    assert default_queue.is_paused
    staff_api.patch(f"{URL}default/", {"is_paused": False}, format="json")
    default_queue.refresh_from_db()
    assert not default_queue.is_paused


def test_staff_change_limits(staff_api, default_queue):
    changes = {"max_concurrency": 8, "max_active_per_user": 100, "max_attempts": 7, "task_timeout_seconds": 60}
    response = staff_api.patch(f"{URL}default/", changes, format="json")
    assert response.status_code == 200
    default_queue.refresh_from_db()
    assert {name: getattr(default_queue, name) for name in changes} == changes
    staff_api.patch(f"{URL}default/", {"max_active_per_user": None}, format="json")
    default_queue.refresh_from_db()
    assert default_queue.max_active_per_user is None


def test_non_staff_cannot_change_a_queue(alice_api, default_queue):
    response = alice_api.patch(f"{URL}default/", {"is_paused": True}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    default_queue.refresh_from_db()
    assert not default_queue.is_paused


@pytest.mark.parametrize(
    "changes",
    [
        {"max_concurrency": -1},
        {"max_attempts": 0},
        {"max_attempts": 1000},
        {"task_timeout_seconds": 0},
        {"max_active_per_user": -5},
        {"retry_backoff_seconds": 0},
        {"retry_backoff_seconds": 100, "retry_backoff_max_seconds": 5},
        {"max_concurrency": 10**12},
        {"max_concurrency": "many"},
        {"is_paused": "perhaps"},
        {"is_paused": "true"},
        {"is_paused": 1},
        {"max_concurrency": 5.0},
        {"max_concurrency": "5"},
        {"description": 42},
        {"name": "renamed"},
        {"colour": "red"},
        {"description": "\ud800"},
    ],
)
def test_invalid_queue_changes_are_400_and_change_nothing(staff_api, default_queue, changes):
    before = QueueConfig.objects.values().get(pk=default_queue.pk)
    response = staff_api.patch(f"{URL}default/", json.dumps(changes), content_type="application/json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert set(body["errors"]) & (set(changes) | {"retry_backoff_max_seconds"})
    assert QueueConfig.objects.values().get(pk=default_queue.pk) == before


def test_queues_cannot_be_replaced_or_deleted(staff_api, default_queue):
    assert staff_api.put(f"{URL}default/", {"is_paused": True}, format="json").status_code == 405
    assert staff_api.delete(f"{URL}default/").status_code == 405
    assert staff_api.post(URL, {"name": "x"}, format="json").status_code == 405
