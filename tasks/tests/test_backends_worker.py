"""Django tasks run by TaskHub's workers: results, errors, retries, backoff, context, async, timeouts.

The worker runs in this process (its children are forked), in burst mode; the lost-worker test
starts real `run_worker` processes.
"""

from __future__ import annotations

import signal

import pytest
from django.test import override_settings

from tasks import services
from tasks.backends.compat import TaskResultStatus, default_task_backend
from tasks.models import QueueConfig, TaskQueue, TaskStatus, TaskStatusCount
from tasks.tests import djtasks
from tasks.tests.conftest import wait_for
from tasks.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)


def drain(**options) -> Worker:
    worker = Worker(burst=True, **options)
    worker.run(install_signal_handlers=False)
    return worker


def test_a_task_runs_and_its_result_reads_back(default_queue):
    result = djtasks.add.enqueue(2, 3)
    worker = drain()
    result.refresh()
    assert (result.status, result.return_value, result.errors) == (TaskResultStatus.SUCCESSFUL, 5, [])
    assert (result.worker_ids, result.attempts) == ([worker.worker_id], 1)
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert result.is_finished
    owner = TaskQueue.objects.get(pk=int(result.id)).owner
    assert TaskStatusCount.objects.get(owner=owner, status=TaskStatus.SUCCEEDED).count == 1, "statistics count it"


def test_an_exception_fails_the_task_with_its_class_path_and_traceback(default_queue):
    result = djtasks.fail.using(max_attempts=1).enqueue("bad input")
    drain()
    result.refresh()
    assert (result.status, result.attempts) == (TaskResultStatus.FAILED, 1)
    error = result.errors[0]
    assert error.exception_class_path == "builtins.ValueError" and error.exception_class is ValueError
    assert "bad input" in error.traceback and "Traceback" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


def test_retries_record_every_attempt_until_max_attempts(default_queue):
    result = djtasks.always_fails.enqueue()
    worker = drain()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert (result.attempts, result.worker_ids) == (3, [worker.worker_id] * 3)
    assert [e.exception_class_path for e in result.errors] == ["builtins.KeyError"] * 3
    row = TaskQueue.objects.get(pk=int(result.id))
    assert [entry["attempt"] for entry in row.attempt_errors] == [1, 2, 3]


def test_a_backoff_that_returns_none_stops_the_retries(default_queue):
    result = djtasks.gives_up.enqueue()
    drain()
    result.refresh()
    row = TaskQueue.objects.get(pk=int(result.id))
    assert (row.status, row.attempts, row.max_attempts) == (TaskStatus.FAILED, 1, 5)
    assert [e.exception_class_path for e in result.errors] == ["builtins.ConnectionError"]


def test_the_context_knows_the_attempt_on_retries(default_queue):
    result = djtasks.fail_twice.enqueue("flaky")
    worker = drain()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"attempt": 3, "id": result.id, "workers": 3}
    assert (result.attempts, result.worker_ids) == (3, [worker.worker_id] * 3)
    assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"] * 2


def test_the_context_holds_the_running_result(default_queue, emails_queue):
    result = djtasks.context_info.using(queue_name="emails", priority=9).enqueue()
    drain()
    assert default_task_backend.get_result(result.id).return_value == {
        "attempt": 1,
        "id": result.id,
        "status": "RUNNING",
        "queue": "emails",
        "priority": 9,
        "args": [],
    }


def test_a_coroutine_function_runs_in_the_worker(default_queue):
    result = djtasks.async_add.enqueue(20, 22)
    drain()
    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 42)


def test_higher_priority_runs_first(default_queue):
    results = {p: djtasks.stamp.using(priority=p).enqueue() for p in (-50, 0, 100, 10)}
    drain(concurrency=1, batch_size=10, prefetch=10)
    ran_at = {p: default_task_backend.get_result(r.id).return_value for p, r in results.items()}
    assert sorted(ran_at, key=ran_at.get) == [100, 10, 0, -50]


def test_a_task_whose_module_is_gone_fails_clearly_and_the_worker_runs_on(default_queue):
    gone = djtasks.add.enqueue(1, 1)
    TaskQueue.objects.filter(pk=int(gone.id)).update(task_type="tasks.tests.no_such_module.add")
    after = djtasks.add.enqueue(2, 2)
    drain(concurrency=1)
    row = TaskQueue.objects.get(pk=int(gone.id))
    assert (row.status, row.attempts) == (TaskStatus.FAILED, 1), "no retry: it cannot get better"
    assert "tasks.tests.no_such_module.add" in row.error and "can no longer be imported" in row.error
    assert row.attempt_errors[0]["exception"] == "builtins.ModuleNotFoundError"
    assert default_task_backend.get_result(after.id).return_value == 4


@pytest.mark.parametrize("path", ["tasks.tests.djtasks.plain_function", "tasks.tests.djtasks.NOT_A_TASK", "os.system"])
def test_a_path_that_is_not_a_task_is_refused(alice, default_queue, path):
    row = services.task_enqueue_django(user=alice, task_path=path, args=["echo hacked"], kwargs={}).task
    drain()
    row.refresh_from_db()
    assert (row.status, row.attempts) == (TaskStatus.FAILED, 1)
    assert "not a Task: refused to run it" in row.error
    assert row.attempt_errors[0]["exception"] == "tasks.backends.results.NotATask"


def test_a_task_past_its_own_timeout_is_killed_and_failed(default_queue):
    result = djtasks.sleeps.enqueue(30)
    row = TaskQueue.objects.get(pk=int(result.id))
    assert row.timeout_seconds == 1 and default_queue.task_timeout_seconds == 300
    drain()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in result.errors] == ["tasks.errors.TaskTimeout"]
    assert "1s" in result.errors[0].traceback
    assert result.errors[0].exception_class.__name__ == "TaskTimeout"


def test_registry_handlers_and_django_tasks_share_one_worker(alice, default_queue):
    handler = services.task_enqueue(user=alice, task_type="echo", payload={"n": 1}).task
    result = djtasks.add.enqueue(1, 1)
    drain(concurrency=2)
    handler.refresh_from_db()
    assert (handler.status, handler.result) == (TaskStatus.SUCCEEDED, {"n": 1})
    assert default_task_backend.get_result(result.id).return_value == 2


def test_a_registry_handlers_failures_keep_their_history_too(alice, default_queue):
    task = services.task_enqueue(user=alice, task_type="fail", payload={"message": "nope"}, max_attempts=1).task
    drain()
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert [(e["attempt"], e["exception"]) for e in task.attempt_errors] == [(1, "tasks.handlers.TaskFailure")]


def test_a_task_of_a_sigkilled_worker_is_retried_after_its_lease(default_queue, start_worker):
    QueueConfig.objects.filter(pk=default_queue.pk).update(retry_backoff_seconds=1, retry_backoff_max_seconds=1)
    result = djtasks.slow_first_time.enqueue(5)  # its own timeout (and lease): 3 s
    first = start_worker("--concurrency", "1")
    wait_for(lambda: TaskQueue.objects.filter(pk=int(result.id), status=TaskStatus.RUNNING).exists(), what="a start")
    first_id = TaskQueue.objects.get(pk=int(result.id)).claimed_by
    first.signal(signal.SIGKILL)
    first.wait(10)

    second = start_worker("--concurrency", "1")
    wait_for(lambda: default_task_backend.get_result(result.id).is_finished, timeout=60, what="the retry to finish")
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0
    result.refresh()
    assert (result.status, result.return_value, result.attempts) == (TaskResultStatus.SUCCESSFUL, 2, 2)
    assert result.worker_ids[0] == first_id and result.worker_ids[1] not in ("", first_id)
    assert [e.exception_class_path for e in result.errors] == ["tasks.errors.WorkerLost"]


def test_options_backoff_applies_to_tasks_without_their_own(default_queue):
    tasks_setting = {
        "default": {
            "BACKEND": "tasks.backends.TaskHubBackend",
            "QUEUES": [],
            "OPTIONS": {"BACKOFF": "tasks.tests.djtasks.never", "MAX_ATTEMPTS": 4},
        }
    }
    with override_settings(TASKS=tasks_setting):
        result = djtasks.fail.enqueue("once is enough")
        drain()  # the children are forked with these settings
    row = TaskQueue.objects.get(pk=int(result.id))
    assert (row.status, row.attempts, row.max_attempts) == (TaskStatus.FAILED, 1, 4)
