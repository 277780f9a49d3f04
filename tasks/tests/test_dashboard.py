"""The staff dashboard: who may see it, what it shows, and its actions through the services."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tasks import counters, services
from tasks.models import QueueConfig, TaskQueue, TaskStatus, TaskStatusCount, WorkerProcess
from tasks.tests.factories import finished_fields, make_task

pytestmark = pytest.mark.django_db

PAGE = "/admin/taskhub/dashboard/"
DATA = "/admin/taskhub/dashboard/data/"


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def plain_staff(django_user_model):
    """Staff without any model permission."""
    return django_user_model.objects.create_user("clerk", password="clerk-password-1", is_staff=True)


def pause_url(name: str) -> str:
    return reverse("taskhub-dashboard-pause", args=[name])


def failed_task(owner, task_type: str = "echo", error: str = "boom"):
    return make_task(owner, task_type=task_type, error=error, **finished_fields(TaskStatus.FAILED))


def test_the_dashboard_lives_under_the_admin():
    assert reverse("taskhub-dashboard") == PAGE
    assert reverse("taskhub-dashboard-data") == DATA


@pytest.mark.parametrize(
    "method,path", [("get", PAGE), ("get", DATA), ("post", "/admin/taskhub/dashboard/queues/default/pause/")]
)
def test_anyone_but_staff_is_sent_to_the_admin_login_and_nothing_changes(client, alice, default_queue, method, path):
    for user in (None, alice):
        if user:
            client.force_login(user)
        response = getattr(client, method)(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert QueueConfig.objects.get(name="default").is_paused is False


def test_staff_without_permission_to_view_queues_is_refused(plain_staff, default_queue):
    client = Client()
    client.force_login(plain_staff)
    assert client.get(PAGE).status_code == 403
    assert client.get(DATA).status_code == 403


def test_page_carries_the_data_its_script_and_a_csrf_token(staff_client, alice, default_queue):
    make_task(alice)

    response = staff_client.get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/taskhub/dashboard.js" in html and "/static/taskhub/dashboard.css" in html
    assert 'name="csrfmiddlewaretoken"' in html
    initial = json.loads(html.split('<script id="th-initial" type="application/json">')[1].split("</script>")[0])
    assert initial["queues"][0]["name"] == "default" and initial["queues"][0]["pending"] == 1
    assert initial["queues"][0]["pause_url"] == pause_url("default")
    assert response["Cache-Control"].startswith("max-age=0")


def test_page_script_and_styles_are_served_by_taskhub_itself(staff_client):
    for name in ("dashboard.js", "dashboard.css"):
        response = staff_client.get(f"/static/taskhub/{name}")
        assert response.status_code == 200
        assert b"".join(response.streaming_content if response.streaming else [response.content])


def test_admin_index_links_to_the_dashboard_for_those_who_may_see_it(staff_client, plain_staff):
    assert f'href="{PAGE}"' in staff_client.get("/admin/").content.decode()
    client = Client()
    client.force_login(plain_staff)
    assert f'href="{PAGE}"' not in client.get("/admin/").content.decode()


def test_data_shows_backlog_workers_throughput_and_failures(staff_client, alice, default_queue):
    services.task_enqueue(user=alice, task_type="echo")
    services.task_enqueue(user=alice, task_type="echo", run_at=timezone.now() + timedelta(hours=1))
    failed_task(alice, "sleep", "Traceback: it broke")
    WorkerProcess.objects.create(worker_id="w1", hostname="host-a", pid=42, queues=[])

    data = staff_client.get(DATA).json()

    (queue,) = data["queues"]
    assert (queue["pending"], queue["scheduled"], queue["running"], queue["live_workers"]) == (1, 1, 0, 1)
    assert queue["oldest_pending_age_seconds"] is not None
    assert [(w["hostname"], w["pid"]) for w in data["workers"]] == [("host-a", 42)]
    assert len(data["throughput"]) == 24 and data["throughput"][-1]["created"] == 2
    assert [(t["task_type"], t["failed"], t["last_error"]) for t in data["failures"]["types"]] == [
        ("sleep", 1, "Traceback: it broke")
    ]
    assert data["retry_url"] == reverse("taskhub-dashboard-retry")


def test_pause_button_pauses_through_the_service_and_answers_a_fresh_snapshot(staff_client, default_queue, monkeypatch):
    calls = []
    real = services.queue_set_paused

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(services, "queue_set_paused", spy)

    response = staff_client.post(pause_url("default"), HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert [(c["queue"].name, c["paused"]) for c in calls] == [("default", True)]
    assert QueueConfig.objects.get(name="default").is_paused is True
    body = response.json()
    assert body["snapshot"]["queues"][0]["is_paused"] is True
    assert "default" in body["message"]


def test_resume_without_script_redirects_back_with_a_message(staff_client, default_queue):
    services.queue_set_paused(queue=default_queue, paused=True)

    response = staff_client.post(reverse("taskhub-dashboard-resume", args=["default"]), follow=True)

    assert response.redirect_chain == [(PAGE, 302)]
    assert QueueConfig.objects.get(name="default").is_paused is False
    assert "resumed" in response.content.decode()


def test_actions_need_post_with_a_csrf_token(staff, default_queue):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.get(pause_url("default")).status_code == 405
    assert client.post(pause_url("default")).status_code == 403
    assert QueueConfig.objects.get(name="default").is_paused is False


def test_pausing_an_unknown_queue_is_a_404(staff_client, default_queue):
    assert staff_client.post(pause_url("nope"), HTTP_ACCEPT="application/json").status_code == 404


def test_staff_who_may_only_view_queues_cannot_pause_them(plain_staff, default_queue):
    plain_staff.user_permissions.add(Permission.objects.get(codename="view_queueconfig"))
    client = Client()
    client.force_login(plain_staff)
    assert client.get(DATA).status_code == 200
    assert client.post(pause_url("default")).status_code == 403
    assert QueueConfig.objects.get(name="default").is_paused is False


def test_retry_puts_the_failed_tasks_of_a_type_back_through_task_retry(staff_client, alice, default_queue, monkeypatch):
    targets = [failed_task(alice, "sleep") for _ in range(2)]
    other = failed_task(alice, "echo")
    counters.rebuild()
    retried = []
    real = services.task_retry
    monkeypatch.setattr(services, "task_retry", lambda **kw: retried.append(kw["task"].pk) or real(**kw))

    response = staff_client.post(
        reverse("taskhub-dashboard-retry"), {"task_type": "sleep"}, HTTP_ACCEPT="application/json"
    )

    assert response.status_code == 200
    assert sorted(retried) == sorted(t.pk for t in targets)
    statuses = dict(TaskQueue.objects.values_list("pk", "status"))
    assert [statuses[t.pk] for t in targets] == [TaskStatus.PENDING] * 2
    assert statuses[other.pk] == TaskStatus.FAILED
    # Counters followed: the two retried tasks are no longer counted as failed.
    assert sum(TaskStatusCount.objects.filter(status=TaskStatus.FAILED).values_list("count", flat=True)) == 1
    assert response.json()["message"].startswith("2 ")


def test_retry_of_a_type_with_no_failures_changes_nothing(staff_client, alice, default_queue):
    task = failed_task(alice, "sleep")
    for task_type in ("", "echo", "x" * 300):
        response = staff_client.post(reverse("taskhub-dashboard-retry"), {"task_type": task_type})
        assert response.status_code == 302
    assert TaskQueue.objects.get(pk=task.pk).status == TaskStatus.FAILED


def test_page_speaks_the_staff_members_language(staff_client, default_queue):
    html = staff_client.get(PAGE, HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    labels = json.loads(html.split('<script id="th-labels" type="application/json">')[1].split("</script>")[0])
    assert "TaskHub 监控面板" in html and labels["pause"] == "暂停"
    answer = staff_client.post(pause_url("default"), HTTP_ACCEPT="application/json", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert answer.json()["message"] == "队列 default 已暂停。"
