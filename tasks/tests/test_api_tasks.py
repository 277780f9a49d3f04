"""Listing, reading, cancelling and retrying tasks; another user's task does not exist."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.models import QueueConfig, TaskQueue, TaskStatus, TaskStatusCount
from tasks.outcomes import format_error
from tasks.tests.factories import finished_fields, make_task

pytestmark = pytest.mark.django_db

URL = "/api/tasks/"


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [task["id"] for task in response.json()["results"]]


def test_a_user_lists_only_their_own_tasks_newest_first(alice_api, alice, bob):
    mine = [make_task(alice).pk for _ in range(3)]
    make_task(bob)
    assert ids(alice_api.get(URL)) == sorted(mine, reverse=True)


def test_staff_list_everyone_and_can_narrow_by_user_id_or_name(staff_api, alice, bob):
    a, b = make_task(alice).pk, make_task(bob).pk
    assert ids(staff_api.get(URL)) == [b, a]
    assert ids(staff_api.get(URL, {"user": "alice"})) == [a]
    assert ids(staff_api.get(URL, {"user": str(bob.pk)})) == [b]
    assert ids(staff_api.get(URL, {"user": "nobody"})) == []


def test_the_user_filter_cannot_widen_a_non_staff_list(alice_api, alice, bob):
    make_task(bob)
    assert ids(alice_api.get(URL, {"user": "bob"})) == []


def test_filters_by_status_queue_type_and_creation_range(alice_api, alice, emails_queue):
    now = timezone.now()
    old = make_task(alice, created_at=now - timedelta(days=2))
    failed = make_task(alice, task_type="fail", **finished_fields(TaskStatus.FAILED, created=now - timedelta(hours=1)))
    mail = make_task(alice, queue=emails_queue)
    assert ids(alice_api.get(URL, {"status": "failed"})) == [failed.pk]
    assert ids(alice_api.get(URL, {"queue": "emails"})) == [mail.pk]
    assert ids(alice_api.get(URL, {"queue": "nope"})) == []
    assert ids(alice_api.get(URL, {"task_type": "fail"})) == [failed.pk]
    after = (now - timedelta(days=1)).isoformat()
    assert ids(alice_api.get(URL, {"created_after": after})) == [mail.pk, failed.pk]
    assert ids(alice_api.get(URL, {"created_before": after})) == [old.pk]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "done"},
        {"created_after": "yesterday"},
        {"created_before": "2030-02-30T00:00:00Z"},
        {"page_size": "0"},
        {"page_size": "1000"},
        {"page_size": "ten"},
        {"cursor": "garbage"},
        {"cursor": "cD1hYmM="},  # base64 of "p=abc": a forged, non-numeric position
        {"cursor": "cD05OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ=="},  # position beyond any id
        {"colour": "red"},
        {"queue": "q" * 65},
    ],
)
def test_bad_list_parameters_answer_400(alice_api, alice, params):
    make_task(alice)
    response = alice_api.get(URL, params)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"


def test_pagination_returns_every_row_exactly_once_while_tasks_are_inserted(alice_api, alice):
    existing = {make_task(alice).pk for _ in range(23)}
    seen: list[int] = []
    url = f"{URL}?page_size=5"
    while url:
        response = alice_api.get(url)
        seen += ids(response)
        make_task(alice)  # arrives between pages, newer than everything listed so far
        make_task(alice)
        url = response.json()["next"]
    assert len(seen) == len(set(seen))
    assert set(seen) == existing


def test_listing_costs_three_queries_whatever_the_page(alice_api, alice, django_assert_num_queries):
    for _ in range(30):
        make_task(alice)
    # One to authenticate the user, one for the page, one for the page's queue names.
    with django_assert_num_queries(3):
        first = alice_api.get(URL, {"page_size": 10})
    with django_assert_num_queries(3):
        alice_api.get(first.json()["next"])


def test_list_pages_never_count_the_table(alice_api, alice, django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    make_task(alice)
    with CaptureQueriesContext(connection) as captured:
        alice_api.get(URL)
    assert not [q for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]


def test_detail_shows_the_task(alice_api, alice):
    task = make_task(alice, payload={"k": "v"})
    body = alice_api.get(f"{URL}{task.pk}/").json()
    assert (body["id"], body["payload"], body["status"], body["queue"]) == (task.pk, {"k": "v"}, "pending", "default")


@pytest.mark.parametrize(
    ("method", "suffix"), [("get", ""), ("post", "cancel/"), ("post", "retry/")], ids=["detail", "cancel", "retry"]
)
def test_another_users_task_is_404_for_every_verb(bob_api, alice, method, suffix):
    task = make_task(alice, **finished_fields(TaskStatus.FAILED))
    response = getattr(bob_api, method)(f"{URL}{task.pk}/{suffix}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Task {task.pk} not found.", "code": "not_found"}
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED


@pytest.mark.parametrize("pk", ["999999", "9999999999999999999999"])
def test_a_missing_or_absurd_id_is_404(alice_api, pk):
    assert alice_api.get(f"{URL}{pk}/").status_code == 404


def test_staff_may_read_and_cancel_anyones_task(staff_api, alice):
    task = make_task(alice)
    assert staff_api.get(f"{URL}{task.pk}/").status_code == 200
    assert staff_api.post(f"{URL}{task.pk}/cancel/").status_code == 200


def test_cancelling_a_pending_task_answers_200_cancelled(alice_api, alice):
    task = make_task(alice)
    response = alice_api.post(f"{URL}{task.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert TaskStatusCount.objects.get(owner=alice, status="cancelled").count == 1


def test_cancelling_a_running_task_answers_202_cancel_requested(alice_api, alice):
    task = make_task(alice, status=TaskStatus.RUNNING)
    response = alice_api.post(f"{URL}{task.pk}/cancel/")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)


@pytest.mark.parametrize("status", [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_cancelling_a_finished_task_is_409(alice_api, alice, status):
    task = make_task(alice, **finished_fields(status))
    response = alice_api.post(f"{URL}{task.pk}/cancel/")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert response.json()["status"] == status


@pytest.mark.parametrize("status", [TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_retrying_a_failed_or_cancelled_task_puts_it_back_to_pending(alice_api, alice, status):
    task = make_task(alice, attempts=3, error="boom", **finished_fields(status))
    response = alice_api.post(f"{URL}{task.pk}/retry/")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["attempts"], body["error"], body["finished_at"]) == ("pending", 0, "", None)


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED])
def test_retrying_any_other_task_is_409(alice_api, alice, status):
    task = make_task(alice, status=status)
    response = alice_api.post(f"{URL}{task.pk}/retry/")
    assert response.status_code == 409
    assert response.json()["status"] == status
    task.refresh_from_db()
    assert task.status == status


def test_every_task_endpoint_needs_a_token(api_client, alice):
    task = make_task(alice)
    for method, url in [
        ("get", URL),
        ("post", URL),
        ("post", f"{URL}bulk/"),
        ("get", f"{URL}{task.pk}/"),
        ("post", f"{URL}{task.pk}/cancel/"),
        ("post", f"{URL}{task.pk}/retry/"),
        ("get", f"{URL}statistics"),
        ("get", f"{URL}queue-status"),
        ("get", "/api/queues/"),
        ("get", "/api/queues/default/"),
    ]:
        response = getattr(api_client, method)(url)
        assert response.status_code == 401, url
        assert "code" in response.json()
    assert QueueConfig.objects.filter(name="default").exists()
    assert TaskQueue.objects.count() == 1


def _failed_with_a_traceback(owner):
    try:
        raise ValueError("the input was odd")
    except ValueError as exc:
        error = format_error(exc)
    attempt = {"attempt": 1, "worker": "w", "exception": "builtins.ValueError", "error": error, "started_at": None}
    return make_task(owner, error=error, attempt_errors=[attempt], **finished_fields(TaskStatus.FAILED))


def test_the_owner_sees_the_exception_but_not_the_traceback(client_for, alice):
    task = _failed_with_a_traceback(alice)

    api = client_for(alice)
    for body in (api.get(f"/api/tasks/{task.pk}/").json(), api.get("/api/tasks/").json()["results"][0]):
        assert body["error"] == "ValueError: the input was odd"
        assert body["attempt_errors"][0]["error"] == "ValueError: the input was odd"
        assert "Traceback" not in json.dumps(body) and __file__ not in json.dumps(body)


def test_staff_see_the_whole_traceback(client_for, alice, staff):
    task = _failed_with_a_traceback(alice)

    body = client_for(staff).get(f"/api/tasks/{task.pk}/").json()

    assert body["error"].startswith("ValueError: the input was odd\n\nTraceback (most recent call last):")
    assert "Traceback" in body["attempt_errors"][0]["error"]
