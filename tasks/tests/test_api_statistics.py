"""GET /api/tasks/statistics and /api/tasks/queue-status, at their exact historical paths."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import services
from tasks.models import QueueConfig, TaskStatus, WorkerProcess
from tasks.tests.factories import make_task

pytestmark = pytest.mark.django_db

STATS = "/api/tasks/statistics"
QUEUE_STATUS = "/api/tasks/queue-status"


@pytest.mark.parametrize("path", [STATS, STATS + "/", QUEUE_STATUS, QUEUE_STATUS + "/"])
def test_compatibility_paths_answer_200_with_and_without_slash_never_redirecting(alice_api, default_queue, path):
    response = alice_api.get(path)
    assert response.status_code == 200
    assert "Location" not in response


def test_statistics_count_only_the_callers_tasks(alice_api, bob_api, default_queue, alice, bob):
    services.task_enqueue(user=alice, task_type="echo")
    cancelled = services.task_enqueue(user=alice, task_type="echo").task
    services.task_cancel(task=cancelled)
    for _ in range(3):
        services.task_enqueue(user=bob, task_type="echo")
    mine = alice_api.get(STATS).json()
    theirs = bob_api.get(STATS).json()
    assert mine["scope"] == "own"
    assert (mine["by_status"]["pending"], mine["by_status"]["cancelled"]) == (1, 1)
    assert mine["by_queue"]["default"]["pending"] == 1
    assert mine["last_hour"]["created"] == 2
    assert mine["last_24_hours"]["cancelled"] == 1
    assert (theirs["by_status"]["pending"], theirs["by_status"]["cancelled"]) == (3, 0)
    assert theirs["last_hour"]["created"] == 3


def test_staff_may_ask_for_everyones_statistics(staff_api, alice, bob, default_queue):
    services.task_enqueue(user=alice, task_type="echo")
    services.task_enqueue(user=bob, task_type="echo")
    assert staff_api.get(STATS).json()["by_status"]["pending"] == 0
    everyone = staff_api.get(STATS, {"scope": "all"}).json()
    assert (everyone["scope"], everyone["by_status"]["pending"]) == ("all", 2)


def test_non_staff_asking_for_everyones_statistics_get_403(alice_api, default_queue):
    response = alice_api.get(STATS, {"scope": "all"})
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_an_unknown_scope_is_400(alice_api, default_queue):
    response = alice_api.get(STATS, {"scope": "galaxy"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("scope:")


def test_queue_status_reports_backlog_limits_and_live_workers(alice_api, alice, bob, default_queue, emails_queue):
    now = timezone.now()
    QueueConfig.objects.filter(pk=emails_queue.pk).update(is_paused=True, max_concurrency=4)
    make_task(alice, run_at=now - timedelta(seconds=90))
    make_task(bob, run_at=now - timedelta(seconds=5))
    make_task(alice, run_at=now + timedelta(hours=1))
    make_task(alice, status=TaskStatus.RUNNING)
    make_task(alice, queue=emails_queue, status=TaskStatus.SUCCEEDED)
    WorkerProcess.objects.create(worker_id="w1", hostname="h", pid=1, queues=[])
    WorkerProcess.objects.create(worker_id="w2", hostname="h", pid=2, queues=["emails"])
    WorkerProcess.objects.create(
        worker_id="dead", hostname="h", pid=3, queues=[], last_heartbeat_at=now - timedelta(hours=1)
    )
    rows = {row["name"]: row for row in alice_api.get(QUEUE_STATUS).json()}
    default, emails = rows["default"], rows["emails"]
    assert (default["pending"], default["scheduled"], default["running"]) == (2, 1, 1)
    assert 90 <= default["oldest_pending_age_seconds"] < 90 + 60
    assert default["live_workers"] == 1
    assert (emails["is_paused"], emails["max_concurrency"], emails["pending"]) == (True, 4, 0)
    assert emails["oldest_pending_age_seconds"] is None
    assert emails["live_workers"] == 2


def test_a_queue_with_only_scheduled_tasks_has_no_oldest_pending_age(alice_api, alice, default_queue, emails_queue):
    now = timezone.now()
    make_task(alice, queue=emails_queue, run_at=now + timedelta(minutes=5))
    make_task(alice, queue=emails_queue, run_at=now + timedelta(hours=1))
    make_task(alice, run_at=now + timedelta(minutes=5))
    make_task(alice, run_at=now - timedelta(seconds=30))

    rows = {row["name"]: row for row in alice_api.get(QUEUE_STATUS).json()}

    assert (rows["emails"]["pending"], rows["emails"]["scheduled"]) == (0, 2)
    assert rows["emails"]["oldest_pending_age_seconds"] is None
    assert 30 <= rows["default"]["oldest_pending_age_seconds"] < 30 + 60
