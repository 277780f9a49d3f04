"""Admin: staff can see and steer; others cannot get in; actions go through the services."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tasks.models import QueueConfig, TaskQueue, TaskStatus, WorkerProcess
from tasks.tests.factories import finished_fields, make_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def some_rows(alice, default_queue):
    task = make_task(alice, payload={"hello": "wörld 🚀"}, **finished_fields(TaskStatus.FAILED))
    TaskQueue.objects.filter(pk=task.pk).update(error="Traceback: boom")
    WorkerProcess.objects.create(worker_id="host:1:abc", hostname="host", pid=1)
    return task


ADMIN_PAGES = [
    ("admin:index", ()),
    ("admin:tasks_queueconfig_changelist", ()),
    ("admin:tasks_taskqueue_changelist", ()),
    ("admin:tasks_workerprocess_changelist", ()),
]


@pytest.mark.parametrize(("name", "args"), ADMIN_PAGES)
def test_admin_pages_render_for_staff(staff_client, some_rows, name, args):
    response = staff_client.get(reverse(name, args=args))
    assert response.status_code == 200


def test_task_page_shows_payload_result_and_error_read_only(staff_client, some_rows):
    response = staff_client.get(reverse("admin:tasks_taskqueue_change", args=[some_rows.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "wörld 🚀" in body
    assert "Traceback: boom" in body
    assert 'name="payload"' not in body  # not an editable input


def test_task_changelist_filters_by_status_and_queue(staff_client, some_rows, alice):
    pending = make_task(alice)
    url = reverse("admin:tasks_taskqueue_changelist")
    body = staff_client.get(url, {"status__exact": "pending"}).content.decode()
    assert reverse("admin:tasks_taskqueue_change", args=[pending.pk]) in body
    assert reverse("admin:tasks_taskqueue_change", args=[some_rows.pk]) not in body


@pytest.mark.parametrize(("name", "args"), ADMIN_PAGES)
def test_non_staff_cannot_enter(client, alice, name, args):
    client.force_login(alice)
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("admin:tasks_taskqueue_changelist"))
    assert response.status_code == 302


def test_retry_action_puts_failed_tasks_back_to_pending(staff_client, some_rows, alice):
    succeeded = make_task(alice, **finished_fields(TaskStatus.SUCCEEDED))
    response = staff_client.post(
        reverse("admin:tasks_taskqueue_changelist"),
        {"action": "retry_tasks", "_selected_action": [some_rows.pk, succeeded.pk]},
        follow=True,
    )
    assert response.status_code == 200
    some_rows.refresh_from_db()
    succeeded.refresh_from_db()
    assert some_rows.status == TaskStatus.PENDING
    assert succeeded.status == TaskStatus.SUCCEEDED
    assert "1 skipped" in response.content.decode()


def test_cancel_action_cancels_pending_tasks(staff_client, alice):
    pending = make_task(alice)
    staff_client.post(
        reverse("admin:tasks_taskqueue_changelist"),
        {"action": "cancel_tasks", "_selected_action": [pending.pk]},
    )
    pending.refresh_from_db()
    assert pending.status == TaskStatus.CANCELLED


def test_tasks_cannot_be_added_or_edited_in_the_admin(staff_client, some_rows):
    assert staff_client.get(reverse("admin:tasks_taskqueue_add")).status_code == 403
    response = staff_client.post(reverse("admin:tasks_taskqueue_change", args=[some_rows.pk]), {"status": "succeeded"})
    assert response.status_code == 403
    some_rows.refresh_from_db()
    assert some_rows.status == TaskStatus.FAILED


def _changelist_form(queue: QueueConfig, **overrides) -> dict:
    data = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-0-id": str(queue.pk),
        "form-0-is_paused": "",
        "form-0-max_concurrency": str(queue.max_concurrency),
        "form-0-max_attempts": str(queue.max_attempts),
        "form-0-task_timeout_seconds": str(queue.task_timeout_seconds),
        "form-0-max_active_per_user": "",
        "_save": "Save",
    }
    data.update({f"form-0-{key}": value for key, value in overrides.items()})
    return data


def test_queue_can_be_paused_and_limited_from_the_list(staff_client, default_queue):
    url = reverse("admin:tasks_queueconfig_changelist")
    response = staff_client.post(url, _changelist_form(default_queue, is_paused="on", max_concurrency="4"))
    assert response.status_code == 302
    default_queue.refresh_from_db()
    assert default_queue.is_paused is True
    assert default_queue.max_concurrency == 4


def test_invalid_limits_are_shown_and_not_saved(staff_client, default_queue):
    url = reverse("admin:tasks_queueconfig_changelist")
    response = staff_client.post(url, _changelist_form(default_queue, max_attempts="0", max_concurrency="-3"))
    assert response.status_code == 200
    assert "errornote" in response.content.decode()
    default_queue.refresh_from_db()
    assert (default_queue.max_attempts, default_queue.max_concurrency) == (3, 0)


def test_pause_and_resume_actions(staff_client, default_queue):
    url = reverse("admin:tasks_queueconfig_changelist")
    staff_client.post(url, {"action": "pause_queues", "_selected_action": [default_queue.pk]})
    default_queue.refresh_from_db()
    assert default_queue.is_paused
    staff_client.post(url, {"action": "resume_queues", "_selected_action": [default_queue.pk]})
    default_queue.refresh_from_db()
    assert not default_queue.is_paused


def test_queue_change_form_validates_backoff(staff_client, default_queue):
    url = reverse("admin:tasks_queueconfig_change", args=[default_queue.pk])
    data = {
        "name": "default",
        "description": "",
        "max_concurrency": "0",
        "max_attempts": "3",
        "retry_backoff_seconds": "100",
        "retry_backoff_max_seconds": "5",
        "task_timeout_seconds": "300",
        "max_active_per_user": "",
    }
    response = staff_client.post(url, data)
    assert response.status_code == 200
    assert "backoff cap must not be below" in response.content.decode()


def test_deleting_tasks_in_the_admin_keeps_counters_in_step(staff_client, some_rows):
    from tasks.models import TaskStatusCount

    TaskStatusCount.objects.create(owner=some_rows.owner, queue=some_rows.queue, status=TaskStatus.FAILED, count=1)
    staff_client.post(
        reverse("admin:tasks_taskqueue_changelist"),
        {"action": "delete_selected", "_selected_action": [some_rows.pk], "post": "yes"},
    )
    assert not TaskQueue.objects.filter(pk=some_rows.pk).exists()
    assert TaskStatusCount.objects.get(owner=some_rows.owner, status=TaskStatus.FAILED).count == 0
