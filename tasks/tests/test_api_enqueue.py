"""POST /api/tasks/ and /api/tasks/bulk/: validation, idempotency, quotas, nothing half-written."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from tasks import selectors
from tasks.models import QueueConfig, TaskHourlyStats, TaskQueue, TaskStatus

pytestmark = pytest.mark.django_db

URL = "/api/tasks/"
BULK_URL = "/api/tasks/bulk/"


def post(client, body, url=URL, **extra):
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(url, raw, content_type=extra.pop("content_type", "application/json"), **extra)


def assert_nothing_written():
    assert TaskQueue.objects.count() == 0
    assert TaskHourlyStats.objects.count() == 0


def test_enqueue_creates_a_pending_task_with_the_queue_defaults(alice_api, alice, emails_queue):
    response = post(alice_api, {"task_type": "echo", "payload": {"x": "🚀"}, "queue": "emails", "priority": 7})
    assert response.status_code == 201, response.json()
    body = response.json()
    task = TaskQueue.objects.get(pk=body["id"])
    assert (task.owner, task.queue, task.status, task.priority) == (alice, emails_queue, TaskStatus.PENDING, 7)
    assert task.max_attempts == 5 == body["max_attempts"]
    assert body["payload"] == {"x": "🚀"}
    assert body["queue"] == "emails"
    assert selectors.task_statistics(user=alice).by_queue["emails"]["pending"] == 1


def test_enqueue_defaults_to_the_default_queue_and_an_empty_payload(alice_api, default_queue):
    body = post(alice_api, {"task_type": "echo"}).json()
    assert (body["queue"], body["payload"], body["priority"], body["max_attempts"]) == ("default", {}, 0, 3)


def test_run_at_with_an_offset_is_kept_and_without_one_is_read_as_utc(alice_api, default_queue):
    with_offset = post(alice_api, {"task_type": "echo", "run_at": "2030-01-01T08:00:00+08:00"}).json()
    naive = post(alice_api, {"task_type": "echo", "run_at": "2030-01-01T00:00:00"}).json()
    assert with_offset["run_at"] == naive["run_at"] == "2030-01-01T00:00:00Z"


def test_the_same_idempotency_key_returns_the_first_task_with_200(alice_api, default_queue):
    first = post(alice_api, {"task_type": "echo", "idempotency_key": "order-42"})
    again = post(alice_api, {"task_type": "sleep", "idempotency_key": "order-42"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["task_type"] == "echo"
    assert TaskQueue.objects.count() == 1
    assert selectors.task_statistics(user=None).last_hour.created == 1


def test_idempotency_keys_are_per_user(alice_api, bob_api, default_queue):
    mine = post(alice_api, {"task_type": "echo", "idempotency_key": "k"})
    theirs = post(bob_api, {"task_type": "echo", "idempotency_key": "k"})
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


def test_an_unknown_task_type_is_refused_naming_the_registered_ones(alice_api, default_queue):
    response = post(alice_api, {"task_type": "nope"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["detail"].startswith("task_type: Unknown task type 'nope'")
    for known in ("echo", "fail", "sleep"):
        assert known in body["detail"]
    assert_nothing_written()


def test_unknown_fields_are_refused_by_name(alice_api, default_queue):
    response = post(alice_api, {"task_type": "echo", "colour": "red", "size": 1})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"colour", "size"}
    assert "colour: Unknown field." == response.json()["detail"]
    assert_nothing_written()


@override_settings(TASK_PAYLOAD_MAX_BYTES=100)
def test_a_payload_over_the_limit_answers_413(alice_api, default_queue):
    fits = {"s": "x" * (100 - len('{"s":""}'))}
    assert post(alice_api, {"task_type": "echo", "payload": fits}).status_code == 201
    response = post(alice_api, {"task_type": "echo", "payload": {"s": fits["s"] + "x"}})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert TaskQueue.objects.count() == 1


def test_a_body_over_the_upload_limit_answers_413_before_parsing(alice_api, default_queue, settings):
    response = post(alice_api, {"task_type": "echo", "payload": {"s": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE}})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert_nothing_written()


def deep(levels: int) -> dict:
    payload: dict = {}
    for _ in range(levels - 1):
        payload = {"a": payload}
    return payload


def test_payloads_nest_at_most_31_levels_and_round_trip(alice_api, default_queue):
    ok = post(alice_api, {"task_type": "echo", "payload": deep(31)})
    assert ok.status_code == 201
    assert TaskQueue.objects.get().payload == deep(31)
    too_deep = post(alice_api, {"task_type": "echo", "payload": deep(32)})
    assert too_deep.status_code == 400
    assert too_deep.json()["detail"].startswith("payload:")


BAD_BODIES = [
    ("malformed json", '{"task_type": "echo",', 400, "parse_error"),
    ("not json at all", "hello", 400, "parse_error"),
    ("NaN is not json", '{"task_type": "echo", "priority": NaN}', 400, "parse_error"),
    ("nested beyond recursion", "[" * 100_000 + "]" * 100_000, 400, "parse_error"),
    ("a list body", [{"task_type": "echo"}], 400, "invalid"),
    ("a string body", '"echo"', 400, "invalid"),
    ("empty object", {}, 400, "invalid"),
    ("missing task type", {"payload": {}}, 400, "invalid"),
    ("task type null", {"task_type": None}, 400, "invalid"),
    ("task type number", {"task_type": 5}, 400, "invalid"),
    ("unknown task type", {"task_type": "rm -rf"}, 400, "invalid"),
    ("unknown queue", {"task_type": "echo", "queue": "nope"}, 400, "invalid"),
    ("unknown field", {"task_type": "echo", "owner": 2}, 400, "invalid"),
    ("payload a list", {"task_type": "echo", "payload": [1, 2]}, 400, "invalid"),
    ("payload a string", {"task_type": "echo", "payload": "{}"}, 400, "invalid"),
    ("payload too deep", {"task_type": "echo", "payload": deep(40)}, 400, "invalid"),
    ("payload lone surrogate", '{"task_type": "echo", "payload": {"s": "\\ud800"}}', 400, "invalid"),
    ("task type lone surrogate", '{"task_type": "\\udfff"}', 400, "invalid"),
    ("field name lone surrogate", '{"task_type": "echo", "\\ud800": 1}', 400, "invalid"),
    ("priority too high", {"task_type": "echo", "priority": 101}, 400, "invalid"),
    ("priority negative beyond", {"task_type": "echo", "priority": -101}, 400, "invalid"),
    ("priority a string", {"task_type": "echo", "priority": "high"}, 400, "invalid"),
    ("priority a float", {"task_type": "echo", "priority": 1.5}, 400, "invalid"),
    ("priority a numeric string", {"task_type": "echo", "priority": "5"}, 400, "invalid"),
    ("priority a boolean", {"task_type": "echo", "priority": True}, 400, "invalid"),
    ("queue a number", {"task_type": "echo", "queue": 7}, 400, "invalid"),
    ("idempotency key a number", {"task_type": "echo", "idempotency_key": 0}, 400, "invalid"),
    ("priority huge", {"task_type": "echo", "priority": 10**40}, 400, "invalid"),
    ("max attempts zero", {"task_type": "echo", "max_attempts": 0}, 400, "invalid"),
    ("max attempts negative", {"task_type": "echo", "max_attempts": -1}, 400, "invalid"),
    ("max attempts too many", {"task_type": "echo", "max_attempts": 101}, 400, "invalid"),
    ("run_at not a date", {"task_type": "echo", "run_at": "tomorrow"}, 400, "invalid"),
    ("run_at month 13", {"task_type": "echo", "run_at": "2030-13-01T00:00:00Z"}, 400, "invalid"),
    ("run_at year 1", {"task_type": "echo", "run_at": "0001-01-01T00:00:00+01:00"}, 400, "invalid"),
    ("run_at before 1970", {"task_type": "echo", "run_at": "1969-12-31T23:59:59Z"}, 400, "invalid"),
    ("run_at year 9999", {"task_type": "echo", "run_at": "9999-12-31T23:59:59-12:00"}, 400, "invalid"),
    ("run_at a number", {"task_type": "echo", "run_at": 1700000000}, 400, "invalid"),
    ("empty idempotency key", {"task_type": "echo", "idempotency_key": ""}, 400, "invalid"),
    ("idempotency key too long", {"task_type": "echo", "idempotency_key": "k" * 129}, 400, "invalid"),
    ("idempotency key with NUL", {"task_type": "echo", "idempotency_key": "a\x00b"}, 400, "invalid"),
    ("queue too long", {"task_type": "echo", "queue": "q" * 65}, 400, "invalid"),
]


@pytest.mark.parametrize(("case", "body", "status", "code"), BAD_BODIES, ids=[row[0] for row in BAD_BODIES])
def test_bad_input_answers_4xx_json_and_writes_nothing(alice_api, default_queue, case, body, status, code):
    response = post(alice_api, body)
    assert response.status_code == status, response.content
    data = response.json()
    assert data["code"] == code
    assert isinstance(data["detail"], str) and data["detail"]
    assert_nothing_written()


def test_a_form_encoded_body_answers_415(alice_api, default_queue):
    response = alice_api.post(URL, {"task_type": "echo"}, format="multipart")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert_nothing_written()


def test_a_body_in_a_declared_charset_is_decoded_with_it(alice_api, default_queue):
    body = json.dumps({"task_type": "echo", "payload": {"s": "grüße"}}, ensure_ascii=False).encode("latin-1")
    response = post(alice_api, body, content_type="application/json; charset=latin-1")
    assert response.status_code == 201
    assert response.json()["payload"] == {"s": "grüße"}


def test_anonymous_enqueue_is_401_and_writes_nothing(api_client, default_queue):
    response = post(api_client, {"task_type": "echo"})
    assert response.status_code == 401
    assert_nothing_written()


def test_a_queue_quota_answers_429_once_the_user_has_that_many_active_tasks(alice_api, bob_api, default_queue):
    QueueConfig.objects.filter(pk=default_queue.pk).update(max_active_per_user=2)
    assert [post(alice_api, {"task_type": "echo"}).status_code for _ in range(2)] == [201, 201]
    refused = post(alice_api, {"task_type": "echo"})
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert post(bob_api, {"task_type": "echo"}).status_code == 201
    TaskQueue.objects.filter(owner__username="alice").update(status=TaskStatus.SUCCEEDED)
    assert post(alice_api, {"task_type": "echo"}).status_code == 201
    assert TaskQueue.objects.filter(owner__username="alice").count() == 3


def test_a_repeated_idempotent_post_returns_its_task_even_at_the_quota(alice_api, default_queue):
    QueueConfig.objects.filter(pk=default_queue.pk).update(max_active_per_user=1)
    first = post(alice_api, {"task_type": "echo", "idempotency_key": "k1"})
    again = post(alice_api, {"task_type": "echo", "idempotency_key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert post(alice_api, {"task_type": "echo", "idempotency_key": "k2"}).status_code == 429


def test_bulk_enqueue_creates_every_task_in_order(alice_api, alice, default_queue, emails_queue):
    items = [{"task_type": "echo", "payload": {"n": n}, "queue": "emails" if n % 2 else "default"} for n in range(7)]
    response = post(alice_api, {"tasks": items}, url=BULK_URL)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["created"] == 7
    assert [t["payload"]["n"] for t in body["tasks"]] == list(range(7))
    ids = [t["id"] for t in body["tasks"]]
    assert ids == sorted(ids)
    assert set(TaskQueue.objects.values_list("id", flat=True)) == set(ids)
    assert selectors.task_statistics(user=alice).last_hour.created == 7


def test_bulk_enqueue_with_one_bad_task_writes_nothing_and_names_it(alice_api, default_queue):
    items = [{"task_type": "echo"}, {"task_type": "echo"}, {"task_type": "nope"}]
    response = post(alice_api, {"tasks": items}, url=BULK_URL)
    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith("tasks.2.task_type: Unknown task type")
    assert list(body["errors"]["tasks"]) == ["2"]
    assert_nothing_written()


def test_bulk_enqueue_with_a_malformed_task_names_only_that_one(alice_api, default_queue):
    items = [{"task_type": "echo"}, {"task_type": "echo", "priority": "x"}]
    response = post(alice_api, {"tasks": items}, url=BULK_URL)
    assert response.status_code == 400
    assert response.json()["detail"] == "tasks.1.priority: A valid integer is required."
    assert_nothing_written()


@pytest.mark.parametrize(
    "body", [{"tasks": []}, {"tasks": {}}, {}, {"tasks": [{"task_type": "echo"}], "extra": 1}, [{"task_type": "echo"}]]
)
def test_bulk_enqueue_refuses_malformed_envelopes(alice_api, default_queue, body):
    response = post(alice_api, body, url=BULK_URL)
    assert response.status_code == 400
    assert_nothing_written()


def test_bulk_enqueue_refuses_more_than_the_limit(alice_api, default_queue):
    from tasks.serializers import BULK_MAX_TASKS

    response = post(alice_api, {"tasks": [{"task_type": "echo"}] * (BULK_MAX_TASKS + 1)}, url=BULK_URL)
    assert response.status_code == 400
    assert_nothing_written()


def test_bulk_enqueue_returns_existing_tasks_for_known_keys(alice_api, default_queue):
    first = post(alice_api, {"task_type": "echo", "idempotency_key": "a"}).json()
    items = [{"task_type": "echo", "idempotency_key": "a"}, {"task_type": "echo", "idempotency_key": "b"}] * 2
    response = post(alice_api, {"tasks": items}, url=BULK_URL)
    assert response.status_code == 201
    body = response.json()
    assert body["created"] == 1
    ids = [t["id"] for t in body["tasks"]]
    assert ids[0] == ids[2] == first["id"]
    assert ids[1] == ids[3] != first["id"]
    again = post(alice_api, {"tasks": items[:2]}, url=BULK_URL)
    assert (again.status_code, again.json()["created"]) == (200, 0)
    assert TaskQueue.objects.count() == 2


def test_bulk_enqueue_past_the_quota_writes_nothing(alice_api, default_queue):
    QueueConfig.objects.filter(pk=default_queue.pk).update(max_active_per_user=3)
    response = post(alice_api, {"tasks": [{"task_type": "echo"}] * 4}, url=BULK_URL)
    assert response.status_code == 429
    assert_nothing_written()


@override_settings(TASK_PAYLOAD_MAX_BYTES=50)
def test_bulk_enqueue_with_one_oversized_payload_answers_413(alice_api, default_queue):
    items = [{"task_type": "echo"}, {"task_type": "echo", "payload": {"s": "x" * 60}}]
    response = post(alice_api, {"tasks": items}, url=BULK_URL)
    assert response.status_code == 413
    assert "task 1" in response.json()["detail"]
    assert_nothing_written()
