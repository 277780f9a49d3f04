"""A bulk retry running while a real worker claims from the same queue: nothing lost, nothing run twice."""

from __future__ import annotations

import pytest

from tasks import bulk
from tasks.models import (
    ACTIVE_STATUSES,
    BulkActionState,
    FailureGroup,
    TaskQueue,
    TaskStatus,
    TaskStatusCount,
    WorkerProcess,
)
from tasks.tests.conftest import enqueue_many, fail_for_good, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


def test_a_bulk_retry_beside_a_claiming_worker_loses_and_duplicates_nothing(
    staff, alice, default_queue, executions_table, start_worker
):
    failed = fail_for_good(alice, 300, error="E: upstream {i} refused", task_type="test.record")
    group = FailureGroup.objects.get()
    fresh = enqueue_many(alice, 200, task_type="test.record")  # the worker is busy with these meanwhile
    worker = start_worker("--concurrency", "2")
    wait_for(lambda: WorkerProcess.objects.exists(), what="the worker to register")
    wait_for(lambda: TaskQueue.objects.filter(status=TaskStatus.SUCCEEDED).exists(), what="the worker to start")

    action = bulk.bulk_action_create(action="retry", filters={"failure_group": group.key}, params={}, by=staff)
    done = bulk.bulk_action_run(action.pk, batch_size=25)
    assert (done.state, done.changed, done.batches) == (BulkActionState.DONE, 300, 13)

    wait_for(
        lambda: not TaskQueue.objects.filter(status__in=ACTIVE_STATUSES).exists(),
        timeout=200,
        interval=0.5,
        what="the queue to drain",
    )
    worker.stop()

    runs = [task_id for task_id, *_ in executions_table()]
    everyone = {task.pk for task in failed + fresh}
    assert len(runs) == len(set(runs)) == 500, "each task ran exactly once"
    assert set(runs) == everyone
    assert TaskQueue.objects.filter(status=TaskStatus.SUCCEEDED).count() == 500
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.SUCCEEDED).count == 500
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.FAILED).count == 0
    group.refresh_from_db()
    assert group.count == 0
