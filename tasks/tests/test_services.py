"""Task and queue services: enqueue, cancel, retry and queue updates do what they say, or nothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from core.tests.both_ways import both_ways
from tasks import selectors, services, transitions
from tasks.errors import QuotaExceeded, TaskSpecInvalid, TaskStateConflict
from tasks.models import QueueConfig, TaskHourlyStats, TaskQueue, TaskStatus, TaskStatusCount
from tasks.specs import TaskSpec
from tasks.tests.factories import finished_fields, make_task

# Every service both ways: with the hand-written statements of tasks.fast_sql and with the ORM's.
raw_task_sql = both_ways("raw_task_sql")
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("raw_task_sql")]


def test_cancelling_a_pending_task_cancels_it_at_once(alice):
    task = make_task(alice)
    assert services.task_cancel(task=task, by=alice) is services.CancelOutcome.CANCELLED
    task.refresh_from_db()
    assert (task.status, task.cancel_requested) == (TaskStatus.CANCELLED, True)  # cancelled by request
    assert task.finished_at is not None
    assert TaskStatusCount.objects.get(owner=alice, status=TaskStatus.CANCELLED).count == 1


def test_cancelling_a_running_task_requests_it(alice):
    task = make_task(alice, status=TaskStatus.RUNNING)
    assert services.task_cancel(task=task, by=alice) is services.CancelOutcome.CANCEL_REQUESTED
    task.refresh_from_db()
    assert (task.status, task.cancel_requested) == (TaskStatus.RUNNING, True)


@pytest.mark.parametrize("status", [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_cancelling_a_finished_task_conflicts(alice, status):
    task = make_task(alice, **finished_fields(status))
    with pytest.raises(TaskStateConflict):
        services.task_cancel(task=task, by=alice)
    task.refresh_from_db()
    assert task.status == status


@pytest.mark.parametrize("status", [TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_retry_puts_a_failed_or_cancelled_task_back_with_attempts_reset(alice, status):
    task = make_task(alice, attempts=3, error="boom", **finished_fields(status))
    TaskStatusCount.objects.create(owner=alice, queue=task.queue, status=status, count=1)
    services.task_retry(task=task, by=alice)
    task.refresh_from_db()
    assert (task.status, task.attempts, task.error, task.finished_at) == (TaskStatus.PENDING, 0, "", None)
    assert TaskStatusCount.objects.get(owner=alice, status=status).count == 0


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED])
def test_retry_of_other_states_conflicts(alice, status):
    task = make_task(alice, status=status)
    with pytest.raises(TaskStateConflict):
        services.task_retry(task=task, by=alice)
    task.refresh_from_db()
    assert task.status == status


# --- Enqueue ------------------------------------------------------------------------------


def test_enqueue_inserts_a_pending_task_that_the_statistics_count_as_created(alice, default_queue):
    result = services.task_enqueue(user=alice, task_type="echo", payload={"a": 1}, priority=5)
    assert result.created
    task = TaskQueue.objects.get(pk=result.task.pk)
    assert (task.status, task.priority, task.payload, task.max_attempts) == (TaskStatus.PENDING, 5, {"a": 1}, 3)
    assert task.run_at == task.created_at
    assert not TaskHourlyStats.objects.exists()  # counted when it finishes; live tasks are counted live
    assert selectors.task_statistics(user=alice).last_hour.created == 1


@pytest.mark.django_db(transaction=True)
def test_one_enqueue_is_one_insert(alice, default_queue):
    services.task_enqueue(user=alice, task_type="echo")  # the queue is read once, then cached
    with CaptureQueriesContext(connection) as captured:
        services.task_enqueue(user=alice, task_type="echo", payload={"n": 2})
    statements = [_statement_and_table(q["sql"]) for q in captured.captured_queries]
    assert statements == [("INSERT", "task_queue")], captured.captured_queries


def test_a_queue_change_in_this_process_is_seen_by_the_next_enqueue(alice, default_queue):
    services.task_enqueue(user=alice, task_type="echo")
    services.queue_update(queue=default_queue, changes={"max_attempts": 7})
    assert services.task_enqueue(user=alice, task_type="echo").task.max_attempts == 7


def test_a_queue_deleted_behind_the_cache_is_reported_as_unknown(alice, default_queue):
    gone = QueueConfig.objects.create(name="gone")
    services.task_enqueue(user=alice, task_type="echo", queue="gone")
    # Deleted by another process: this process's cache still has it.
    TaskQueue.objects.filter(queue=gone).delete()
    QueueConfig.objects.filter(pk=gone.pk).delete()
    with pytest.raises(TaskSpecInvalid) as caught:
        services.task_enqueue(user=alice, task_type="echo", queue="gone")
    assert "queue" in caught.value.errors


def test_an_idempotency_key_conflict_returns_the_existing_task_with_one_insert_and_one_read(alice, default_queue):
    first = services.task_enqueue(user=alice, task_type="echo", idempotency_key="k-1")
    with CaptureQueriesContext(connection) as captured:
        again = services.task_enqueue(user=alice, task_type="echo", idempotency_key="k-1")
    assert (again.created, again.task.pk) == (False, first.task.pk)
    statements = [
        q["sql"] for q in captured.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))
    ]
    # The INSERT that failed on the key (Django logs a failed statement's text as "None" on MySQL), then the read.
    assert len(statements) == 2, statements
    assert statements[0].startswith("INSERT") or statements[0] == "None"
    assert _statement_and_table(statements[1]) == ("SELECT", "task_queue")


def _statement_and_table(sql: str) -> tuple[str, str]:
    words = sql.replace('"', "").replace("`", "").split()
    if words[0] == "SELECT":
        return "SELECT", words[words.index("FROM") + 1]
    return words[0], words[2] if words[0] == "INSERT" else words[1]


def test_one_enqueue_stores_every_field_as_the_bulk_insert_does(alice, default_queue):
    fields = {
        "task_type": "echo",
        "payload": {"text": "数据 🚀", "nested": [1, {"a": None}]},
        "priority": -7,
        "run_at": datetime(2031, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "max_attempts": 9,
        "idempotency_key": "order-42",
    }
    one = services.task_enqueue(user=alice, **fields).task
    other = services.tasks_enqueue_bulk(
        user=alice, specs=[TaskSpec(**{**fields, "idempotency_key": "order-43"}), TaskSpec("echo")]
    ).tasks[0]
    columns = [f.attname for f in TaskQueue._meta.concrete_fields if f.attname not in ("id", "idempotency_key")]
    stored = {t.pk: t for t in TaskQueue.objects.filter(pk__in=[one.pk, other.pk])}
    assert stored[one.pk].idempotency_key == "order-42"
    for column in columns:
        if column != "created_at":
            assert getattr(stored[one.pk], column) == getattr(stored[other.pk], column), column
        assert getattr(stored[one.pk], column) == getattr(one, column), column


def test_enqueue_reads_a_naive_run_at_as_utc(alice, default_queue):
    task = services.task_enqueue(user=alice, task_type="echo", run_at=datetime(2031, 5, 1, 12, 0)).task
    task.refresh_from_db()
    assert task.run_at == datetime(2031, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"task_type": "nope"}, "task_type"),
        ({"task_type": "echo", "queue": "nope"}, "queue"),
        ({"task_type": "echo", "queue": ["default"]}, "queue"),
        ({"task_type": "echo", "priority": True}, "priority"),
        ({"task_type": "echo", "max_attempts": 0}, "max_attempts"),
        ({"task_type": "echo", "idempotency_key": ""}, "idempotency_key"),
        ({"task_type": "echo", "run_at": "2030-01-01"}, "run_at"),
        ({"task_type": "echo", "payload": [1]}, "payload"),
        ({"task_type": "echo", "payload": {"when": datetime(2030, 1, 1)}}, "payload"),
    ],
)
def test_enqueue_refuses_bad_specs_from_any_caller_and_writes_nothing(alice, default_queue, fields, bad):
    with pytest.raises(TaskSpecInvalid) as caught:
        services.task_enqueue(user=alice, **fields)
    assert bad in caught.value.errors
    assert not TaskQueue.objects.exists()


def test_enqueue_refuses_a_self_containing_payload(alice, default_queue):
    payload: dict = {}
    payload["self"] = payload
    with pytest.raises(TaskSpecInvalid):
        services.task_enqueue(user=alice, task_type="echo", payload=payload)


def test_an_insert_that_loses_an_idempotency_race_returns_the_winner(alice, default_queue, monkeypatch):
    """The pre-check misses a task committed meanwhile; the unique constraint catches it."""
    winner = make_task(alice, idempotency_key="k")
    real_filter = TaskQueue.objects.filter
    calls = {"lookups": 0}

    def blind_first_lookup(*args, **kwargs):
        if "idempotency_key__in" in kwargs:
            calls["lookups"] += 1
            if calls["lookups"] == 1:
                return TaskQueue.objects.none()
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(TaskQueue.objects, "filter", blind_first_lookup)
    result = services.task_enqueue(user=alice, task_type="echo", idempotency_key="k")
    assert (result.created, result.task.pk, calls["lookups"]) == (False, winner.pk, 2)
    assert TaskQueue.objects.count() == 1
    assert not TaskHourlyStats.objects.exists()


def test_quota_counts_only_active_tasks_of_that_user_and_queue(alice, bob, default_queue):
    other = QueueConfig.objects.create(name="other")
    QueueConfig.objects.filter(pk=default_queue.pk).update(max_active_per_user=2)
    make_task(alice, **finished_fields(TaskStatus.SUCCEEDED))
    make_task(alice, queue=other)
    make_task(bob)
    services.task_enqueue(user=alice, task_type="echo")
    services.task_enqueue(user=alice, task_type="echo")
    with pytest.raises(QuotaExceeded) as caught:
        services.task_enqueue(user=alice, task_type="echo")
    assert (caught.value.active, caught.value.requested) == (2, 1)


def test_bulk_enqueue_writes_one_multi_row_insert_per_batch(alice, default_queue):
    specs = [TaskSpec(task_type="echo", payload={"n": n}) for n in range(transitions.ENQUEUE_BATCH_SIZE + 10)]
    with CaptureQueriesContext(connection) as captured:
        result = services.tasks_enqueue_bulk(user=alice, specs=specs)
    inserts = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("INSERT INTO `task_queue`")]
    inserts += [q["sql"] for q in captured.captured_queries if q["sql"].startswith('INSERT INTO "task_queue"')]
    # SQLite caps the parameters of one statement; MySQL takes each batch in one INSERT.
    # The INSERTed columns: not the id, not the generated ones.
    fields = [f for f in TaskQueue._meta.concrete_fields if not f.primary_key and not f.generated]
    per_insert = min(transitions.ENQUEUE_BATCH_SIZE, connection.ops.bulk_batch_size(fields, specs))
    assert len(inserts) == math.ceil(len(specs) / per_insert)
    if connection.vendor == "mysql":
        assert len(inserts) == 2
    # Besides the INSERTs: the queue lookup and savepoints; no counter is written at enqueue.
    assert len(captured.captured_queries) - len(inserts) <= 4
    assert result.created == len(specs)
    assert [t.payload["n"] for t in TaskQueue.objects.order_by("id")] == list(range(len(specs)))
    assert [t.pk for t in result.tasks] == list(TaskQueue.objects.order_by("id").values_list("id", flat=True))
    assert selectors.task_statistics(user=alice).last_hour.created == len(specs)


def test_bulk_enqueue_reads_ids_back_where_the_backend_cannot_return_them(alice, default_queue, monkeypatch):
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)
    make_task(alice)
    n = 300  # more than CPython keeps one int object for: counts compared by value
    result = services.tasks_enqueue_bulk(user=alice, specs=[TaskSpec("echo", {"n": i}) for i in range(n)])
    assert all(t.pk for t in result.tasks)
    assert {(t._state.adding, t._state.db) for t in result.tasks} == {(False, "default")}, (
        "stored rows, as Django marks them"
    )
    stored = dict(TaskQueue.objects.filter(pk__in=[t.pk for t in result.tasks]).values_list("pk", "payload"))
    assert [stored[t.pk]["n"] for t in result.tasks] == list(range(n))


def test_bulk_enqueue_names_the_first_bad_spec_and_writes_nothing(alice, default_queue):
    specs = [TaskSpec("echo"), TaskSpec("echo", priority=500), TaskSpec("nope")]
    with pytest.raises(TaskSpecInvalid) as caught:
        services.tasks_enqueue_bulk(user=alice, specs=specs)
    assert (caught.value.index, list(caught.value.errors)) == (1, ["priority"])
    assert not TaskQueue.objects.exists()


def test_bulk_enqueue_of_nothing_does_nothing(alice, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert services.tasks_enqueue_bulk(user=alice, specs=[]).tasks == []


# --- Queues -------------------------------------------------------------------------------


def test_queue_update_changes_only_the_given_fields(default_queue):
    services.queue_update(queue=default_queue, changes={"max_concurrency": 3, "is_paused": True})
    default_queue.refresh_from_db()
    assert (default_queue.max_concurrency, default_queue.is_paused, default_queue.max_attempts) == (3, True, 3)


def test_queue_update_validates_like_the_admin(default_queue):
    with pytest.raises(ValidationError) as caught:
        services.queue_update(
            queue=default_queue, changes={"retry_backoff_seconds": 100, "retry_backoff_max_seconds": 5}
        )
    assert "retry_backoff_max_seconds" in caught.value.message_dict
    default_queue.refresh_from_db()
    assert default_queue.retry_backoff_seconds == 10


def test_queue_update_refuses_fields_that_are_not_editable(default_queue):
    with pytest.raises(ValueError, match="name"):
        services.queue_update(queue=default_queue, changes={"name": "other"})


@pytest.mark.mysql
def test_keys_the_database_deems_equal_return_the_existing_task(alice, default_queue):
    first = services.task_enqueue(user=alice, task_type="echo", idempotency_key="Order-1").task
    again = services.task_enqueue(user=alice, task_type="echo", idempotency_key="order-1")
    assert (again.created, again.task.pk) == (False, first.pk)
    bulk = services.tasks_enqueue_bulk(
        user=alice, specs=[TaskSpec("echo", idempotency_key="ORDER-1"), TaskSpec("echo")]
    )
    assert (bulk.created, bulk.tasks[0].pk) == (1, first.pk)


@pytest.mark.mysql
def test_one_request_with_two_keys_the_database_deems_equal_is_refused(alice, default_queue):
    specs = [TaskSpec("echo", idempotency_key="x"), TaskSpec("echo", idempotency_key="X")]
    with pytest.raises(TaskSpecInvalid) as caught:
        services.tasks_enqueue_bulk(user=alice, specs=specs)
    assert "idempotency_key" in caught.value.errors
    assert not TaskQueue.objects.exists()


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_a_payload_number_no_database_can_store_is_refused_at_validation(alice, default_queue, number):
    with pytest.raises(TaskSpecInvalid) as refused:
        services.task_enqueue(user=alice, task_type="echo", payload={"x": [number]}, idempotency_key="k")

    assert set(refused.value.errors) == {"payload"}
    assert not TaskQueue.objects.exists()


@pytest.mark.parametrize("keys", [("a",), ("a", "b")])
def test_an_integrity_error_other_than_the_key_is_raised_not_taken_for_a_race(alice, default_queue, monkeypatch, keys):
    calls = []

    def fail(**kwargs):
        calls.append(1)
        raise IntegrityError(4025, "CONSTRAINT `task_queue.payload` failed for `test`.`task_queue`")

    monkeypatch.setattr(services, "_insert_specs", fail)
    specs = [TaskSpec(task_type="echo", idempotency_key=key) for key in keys]

    with pytest.raises(IntegrityError):
        services.tasks_enqueue_bulk(user=alice, specs=specs)
    assert len(calls) == 1
