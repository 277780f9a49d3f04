"""purge_tasks deletes only old finished tasks, in batches, with counters in step; rebuild_task_stats repairs."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from tasks import counters, transitions
from tasks.models import TaskQueue, TaskStatus, TaskStatusCount
from tasks.retention import tasks_purge_finished
from tasks.tests.factories import finished_fields, make_task
from tasks.tests.test_counters import status_counts_brute_force, status_counts_from_counters

pytestmark = pytest.mark.django_db


def counted(owner, **fields) -> TaskQueue:
    with transaction.atomic():
        task = make_task(owner, **fields)
        if task.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED):
            counters.record_finished([task])
    return task


@pytest.fixture
def mixed(alice, bob):
    now = timezone.now()
    old = now - timedelta(days=40)
    return {
        "old_succeeded": [counted(alice, **finished_fields(TaskStatus.SUCCEEDED, created=old)) for _ in range(5)],
        "old_failed": counted(bob, **finished_fields(TaskStatus.FAILED, created=old)),
        "old_pending": counted(alice, created_at=old),
        "old_running": counted(alice, status=TaskStatus.RUNNING, created_at=old, started_at=old),
        "recent_succeeded": counted(alice, **finished_fields(TaskStatus.SUCCEEDED, created=now - timedelta(days=1))),
        "old_but_finished_recently": counted(
            alice, status=TaskStatus.SUCCEEDED, created_at=old, started_at=now - timedelta(hours=2), finished_at=now
        ),
    }


def test_it_deletes_only_finished_tasks_older_than_the_cutoff(mixed):
    result = tasks_purge_finished(before=timezone.now() - timedelta(days=30), batch_size=3)

    assert result.deleted == 6
    remaining = set(TaskQueue.objects.values_list("pk", flat=True))
    kept = {mixed[name].pk for name in ("old_pending", "old_running", "recent_succeeded", "old_but_finished_recently")}
    assert remaining == kept
    assert status_counts_from_counters() == status_counts_brute_force()


def test_it_works_in_bounded_batches_and_can_stop_early(mixed):
    result = tasks_purge_finished(before=timezone.now() - timedelta(days=30), batch_size=2, max_batches=1)

    assert (result.batches, result.deleted) == (1, 2)
    assert status_counts_from_counters() == status_counts_brute_force()


def test_it_can_keep_some_statuses(mixed):
    tasks_purge_finished(before=timezone.now() - timedelta(days=30), statuses=[TaskStatus.FAILED])

    assert not TaskQueue.objects.filter(pk=mixed["old_failed"].pk).exists()
    assert TaskQueue.objects.filter(status=TaskStatus.SUCCEEDED).count() == 7


def test_it_refuses_to_purge_active_statuses():
    with pytest.raises(ValueError, match="only finished statuses"):
        tasks_purge_finished(before=timezone.now(), statuses=[TaskStatus.PENDING])


def test_the_command_reports_what_it_deleted(mixed):
    out = StringIO()
    call_command("purge_tasks", "--older-than", "30", "--status", "succeeded", stdout=out)

    assert out.getvalue().startswith("Deleted 5 finished task(s)")
    assert TaskQueue.objects.filter(pk=mixed["old_failed"].pk).exists()


@pytest.mark.parametrize(
    "args", [["--older-than", "0"], ["--older-than", "-3"], ["--older-than", "5", "--batch-size", "0"]]
)
def test_the_command_refuses_bad_arguments_and_deletes_nothing(mixed, args):
    with pytest.raises(CommandError):
        call_command("purge_tasks", *args)
    assert TaskQueue.objects.count() == 10


def test_the_command_refuses_an_active_status(mixed):
    with pytest.raises(CommandError):
        call_command("purge_tasks", "--older-than", "1", "--status", "pending")
    assert TaskQueue.objects.count() == 10


def test_rebuild_task_stats_repairs_broken_counters(mixed):
    TaskStatusCount.objects.update(count=999)
    out = StringIO()
    call_command("rebuild_task_stats", stdout=out)

    assert status_counts_from_counters() == status_counts_brute_force()
    assert out.getvalue().startswith("Rebuilt ")


@pytest.mark.django_db(transaction=True)
def test_a_task_retried_between_the_scan_and_the_delete_survives(alice, monkeypatch):
    """The purge picks a failed task; before its delete runs, a retry commits on another connection."""
    old = timezone.now() - timedelta(days=40)
    retried = counted(alice, **finished_fields(TaskStatus.FAILED, created=old))
    purged = counted(alice, **finished_fields(TaskStatus.SUCCEEDED, created=old))
    real_purge = transitions.purge
    chosen: list[int] = []

    def retry_elsewhere() -> None:
        try:
            assert transitions.reopen(TaskQueue.objects.get(pk=retried.pk))
        finally:
            connection.close()  # this thread's own connection

    def retry_then_purge(pks, **kwargs):
        chosen.extend(pks)
        thread = threading.Thread(target=retry_elsewhere)
        thread.start()
        thread.join()
        return real_purge(pks, **kwargs)

    monkeypatch.setattr(transitions, "purge", retry_then_purge)
    result = tasks_purge_finished(before=timezone.now() - timedelta(days=30))

    assert retried.pk in chosen, "the scan chose the task before it was retried"
    assert result.deleted == 1
    assert TaskQueue.objects.get(pk=retried.pk).status == TaskStatus.PENDING
    assert not TaskQueue.objects.filter(pk=purged.pk).exists()
    assert status_counts_from_counters() == status_counts_brute_force()
