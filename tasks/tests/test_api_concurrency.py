"""On MariaDB/MySQL: racing posts with one idempotency key, and racing a per-user quota."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.services import session_start
from tasks import selectors
from tasks.models import QueueConfig, TaskQueue

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True)]

POSTERS = 20


def race(user, body: dict, *, posters: int = POSTERS) -> list[tuple[int, dict]]:
    """POST `body` from `posters` threads at once, each on its own connection; return the answers."""
    token = f"Bearer {session_start(user=user).access}"
    start = threading.Barrier(posters, timeout=60)
    answers: list[tuple[int, dict]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def post() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=token)
            start.wait()
            response = client.post("/api/tasks/", json.dumps(body), content_type="application/json")
            with lock:
                answers.append((response.status_code, response.json()))
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(posters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    return answers


def test_twenty_concurrent_posts_with_one_idempotency_key_create_exactly_one_task(alice, default_queue):
    answers = race(alice, {"task_type": "echo", "idempotency_key": "pay-invoice-7"})
    statuses = Counter(code for code, _ in answers)
    assert statuses == {201: 1, 200: POSTERS - 1}, answers
    assert len({body["id"] for _, body in answers}) == 1
    assert TaskQueue.objects.filter(owner=alice, idempotency_key="pay-invoice-7").count() == 1
    assert TaskQueue.objects.count() == 1
    assert selectors.task_statistics(user=alice).last_hour.created == 1


def test_concurrent_posts_cannot_exceed_a_queue_quota(alice, default_queue):
    QueueConfig.objects.filter(pk=default_queue.pk).update(max_active_per_user=5)
    answers = race(alice, {"task_type": "echo"})
    statuses = Counter(code for code, _ in answers)
    assert statuses == {201: 5, 429: POSTERS - 5}, answers
    assert all(body["code"] == "quota_exceeded" for code, body in answers if code == 429)
    assert TaskQueue.objects.filter(owner=alice).count() == 5
    assert selectors.task_statistics(user=alice).last_hour.created == 5
