"""Model validation and database constraints."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from tasks.models import QueueConfig, TaskQueue, TaskStatus
from tasks.tests.factories import make_task

pytestmark = pytest.mark.django_db


def test_the_default_queue_exists_after_migrate():
    queue = QueueConfig.objects.get(name="default")
    assert not queue.is_paused
    assert queue.max_concurrency == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", 101), ("priority", -101), ("progress", 101), ("max_attempts", 0), ("max_attempts", 1000)],
)
def test_task_validation_names_the_bad_field(alice, default_queue, field, value):
    task = TaskQueue(owner=alice, queue=default_queue, task_type="echo", **{field: value})
    with pytest.raises(ValidationError) as caught:
        task.full_clean()
    assert field in caught.value.message_dict


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrency", -1),
        ("max_attempts", 0),
        ("task_timeout_seconds", 0),
        ("max_active_per_user", -5),
        ("retry_backoff_seconds", 0),
    ],
)
def test_queue_validation_rejects_negative_and_zero_limits(field, value):
    queue = QueueConfig(name="q1", **{field: value})
    with pytest.raises(ValidationError) as caught:
        queue.full_clean()
    assert field in caught.value.message_dict


def test_queue_backoff_cap_below_base_is_refused():
    queue = QueueConfig(name="q1", retry_backoff_seconds=60, retry_backoff_max_seconds=10)
    with pytest.raises(ValidationError) as caught:
        queue.full_clean()
    assert "retry_backoff_max_seconds" in caught.value.message_dict


def test_queue_names_are_restricted_to_a_safe_alphabet():
    with pytest.raises(ValidationError):
        QueueConfig(name="bad name!").full_clean()
    QueueConfig(name="emails.high-prio_2").full_clean()


def test_database_refuses_out_of_range_priority_even_without_full_clean(alice, default_queue):
    with pytest.raises(IntegrityError), transaction.atomic():
        TaskQueue.objects.create(owner=alice, queue=default_queue, task_type="echo", priority=500)


def test_database_refuses_an_unknown_status(alice, default_queue):
    with pytest.raises(IntegrityError), transaction.atomic():
        TaskQueue.objects.create(owner=alice, queue=default_queue, task_type="echo", status="lost")


def test_idempotency_key_is_unique_per_owner_only(alice, bob):
    make_task(alice, idempotency_key="k1")
    make_task(bob, idempotency_key="k1")
    make_task(alice)  # NULL keys never collide
    make_task(alice)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_task(alice, idempotency_key="k1")


def test_a_queue_with_tasks_cannot_be_deleted(alice):
    queue = QueueConfig.objects.create(name="busy")
    make_task(alice, queue=queue)
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        queue.delete()


def test_str_is_readable(alice):
    task = make_task(alice)
    assert str(task) == f"#{task.pk} echo (pending)"
    assert str(QueueConfig.objects.get(name="default")) == "default"
    assert task.is_finished is False
    task.status = TaskStatus.FAILED
    assert task.is_finished is True
