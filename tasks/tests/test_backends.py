"""TaskHubBackend without a worker: enqueue, get_result, defer, priority, validation, checks, owners.

The behaviour tests django-tasks-db runs for its backend, ported, plus TaskHub's own rules.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from tasks import services, transitions
from tasks.backends import InvalidTaskArguments, TaskHubBackend, TaskHubTask, enqueue_as
from tasks.backends.compat import (
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
    task_enqueued,
)
from tasks.backends.owner import DEFAULT_OWNER
from tasks.models import QueueConfig, TaskKind, TaskQueue, TaskStatus
from tasks.tests import djtasks

pytestmark = pytest.mark.django_db

TASKHUB = "tasks.backends.TaskHubBackend"


def taskhub_settings(**options) -> dict:
    return {"default": {"BACKEND": TASKHUB, "QUEUES": [], "OPTIONS": options}}


def row_of(result) -> TaskQueue:
    return TaskQueue.objects.get(pk=int(result.id))


# --- The backend as configured -------------------------------------------------------------------


def test_taskhub_is_the_default_backend_with_every_capability():
    backend = task_backends["default"]
    assert isinstance(backend, TaskHubBackend)
    assert backend.queues == set(), "QUEUES empty: every queue in queue_config is accepted"
    assert (backend.supports_defer, backend.supports_async_task) == (True, True)
    assert (backend.supports_get_result, backend.supports_priority) == (True, True)
    assert isinstance(djtasks.add, TaskHubTask)


def test_unknown_options_are_refused_when_the_backend_is_created():
    with override_settings(TASKS=taskhub_settings(OWNR="x")), pytest.raises(InvalidTaskBackend, match="OWNR"):
        task_backends["default"]
    with override_settings(TASKS=taskhub_settings(MAX_ATTEMPTS=0)), pytest.raises(InvalidTaskBackend):
        task_backends["default"]
    with (
        override_settings(TASKS=taskhub_settings(BACKOFF="tasks.tests.djtasks.nowhere")),
        pytest.raises(InvalidTaskBackend, match="BACKOFF"),
    ):
        task_backends["default"]


# --- enqueue ---------------------------------------------------------------------------------------


def test_enqueue_returns_a_ready_result_whose_id_is_the_tasks_id(default_queue):
    result = djtasks.add.enqueue(1, 2)
    row = row_of(result)
    assert result.status == TaskResultStatus.READY
    assert (result.args, result.kwargs, result.backend) == ([1, 2], {}, "default")
    assert result.enqueued_at == row.created_at
    assert (result.started_at, result.finished_at, result.errors, result.worker_ids) == (None, None, [], [])
    assert (row.kind, row.task_type, row.status) == (TaskKind.DJANGO, "tasks.tests.djtasks.add", TaskStatus.PENDING)
    assert row.payload == {"args": [1, 2], "kwargs": {}}
    assert (row.queue, row.priority, row.max_attempts, row.timeout_seconds) == (default_queue, 0, 3, None)
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value


def test_enqueue_sends_task_enqueued(default_queue):
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((sender, task_result.id))

    task_enqueued.connect(receiver)
    try:
        result = djtasks.add.enqueue(1, 1)
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [(TaskHubBackend, result.id)]


def test_aenqueue_and_aget_result(default_queue):
    result = async_to_sync(djtasks.echo.aenqueue)("x", n=1)
    again = async_to_sync(djtasks.echo.aget_result)(result.id)
    assert (again.id, again.args, again.kwargs, again.status) == (result.id, ["x"], {"n": 1}, TaskResultStatus.READY)


def test_a_task_enqueued_from_python_belongs_to_the_system_user_unless_one_is_given(default_queue, alice):
    assert row_of(djtasks.add.enqueue(1, 1)).owner.username == DEFAULT_OWNER
    with enqueue_as(alice):
        assert row_of(djtasks.add.enqueue(1, 1)).owner == alice
    assert row_of(djtasks.add.enqueue(1, 1)).owner.username == DEFAULT_OWNER


def test_migrate_creates_the_system_user_without_a_usable_password_or_staff(django_user_model):
    user = django_user_model.objects.get(username=DEFAULT_OWNER)
    assert (user.has_usable_password(), user.is_staff, user.is_superuser) == (False, False, False)


def test_migrate_creates_a_configured_owner(django_user_model):
    with override_settings(TASKS=taskhub_settings(OWNER="reports-bot")):
        call_command("migrate", verbosity=0)
    assert django_user_model.objects.filter(username="reports-bot").exists()


def test_options_set_defaults_that_a_tasks_own_policy_overrides(default_queue):
    with override_settings(TASKS=taskhub_settings(MAX_ATTEMPTS=7, TIMEOUT=30)):
        plain = task(djtasks.add.func)  # a fresh Task on the overridden backend
        own = task(djtasks.add.func, max_attempts=2, timeout=5)
        assert (row_of(plain.enqueue(1, 1)).max_attempts, row_of(plain.enqueue(1, 1)).timeout_seconds) == (7, 30)
        assert (row_of(own.enqueue(1, 1)).max_attempts, row_of(own.enqueue(1, 1)).timeout_seconds) == (2, 5)
        changed = own.using(max_attempts=9, timeout=60, priority=5)
        row = row_of(changed.enqueue(1, 1))
        assert (row.max_attempts, row.timeout_seconds, row.priority) == (9, 60, 5)
    assert row_of(djtasks.add.enqueue(1, 1)).max_attempts == default_queue.max_attempts, "else the queue's"


def test_an_invalid_policy_is_refused_when_the_task_is_defined():
    with pytest.raises(InvalidTask, match="max_attempts"):
        task(djtasks.add.func, max_attempts=0)
    with pytest.raises(InvalidTask, match="timeout"):
        task(djtasks.add.func, timeout=1.5)
    with pytest.raises(InvalidTask, match="backoff"):
        task(djtasks.add.func, backoff="not callable")


# --- Django's validation ---------------------------------------------------------------------------


def test_a_task_must_be_a_module_level_function():
    def inner() -> None: ...

    with pytest.raises(InvalidTask, match="module level"):
        task(inner)


def test_takes_context_needs_a_context_argument():
    with pytest.raises(InvalidTask, match="context"):
        task(djtasks.add.func, takes_context=True)


@pytest.mark.parametrize("priority", [-101, 101, 1.5])
def test_priority_must_be_a_whole_number_from_minus_100_to_100(priority):
    with pytest.raises(InvalidTask, match="priority"):
        djtasks.add.using(priority=priority)


def test_run_after_must_be_aware():
    with pytest.raises(InvalidTask, match="aware"):
        djtasks.add.using(run_after=datetime(2030, 1, 1))


@pytest.mark.parametrize(
    ("args", "kwargs", "why"),
    [
        (((1, 2),), {}, "tuple"),
        (({1: "one"},), {}, "dict key 1"),
        ((), {"x": {"nested": {2: 2}}}, "dict key 2"),
        ((math.nan,), {}, "nan"),
        ((), {"x": [math.inf]}, "inf"),
        ((b"bytes",), {}, "bytes"),
        ((object(),), {}, "object"),
    ],
)
def test_arguments_that_would_not_round_trip_through_json_are_refused_at_enqueue(default_queue, args, kwargs, why):
    with pytest.raises(InvalidTaskArguments, match=why) as caught:
        djtasks.echo.enqueue(*args, **kwargs)
    assert isinstance(caught.value, InvalidTask) and isinstance(caught.value, TypeError)
    assert not TaskQueue.objects.exists()


def test_arguments_that_round_trip_are_stored_exactly(default_queue):
    args = [1, 2.5, "数据 🚀", None, True, [1, [2]], {"a": {"b": []}}]
    result = djtasks.echo.enqueue(*args, key={"k": 1})
    assert row_of(result).payload == {"args": args, "kwargs": {"key": {"k": 1}}}
    assert djtasks.echo.get_result(result.id).args == args


# --- Queues ----------------------------------------------------------------------------------------


def test_any_queue_in_queue_config_is_accepted_and_an_unknown_one_refused(default_queue, emails_queue):
    assert row_of(djtasks.add.using(queue_name="emails").enqueue(1, 1)).queue == emails_queue
    with pytest.raises(InvalidTask, match="Unknown queue 'nowhere'"):
        djtasks.add.using(queue_name="nowhere").enqueue(1, 1)
    assert TaskQueue.objects.count() == 1


def test_queues_named_in_settings_restrict_the_tasks_queues(default_queue, emails_queue):
    with override_settings(TASKS={"default": {"BACKEND": TASKHUB, "QUEUES": ["emails"]}}):
        with pytest.raises(InvalidTask, match="not valid for backend"):
            task(djtasks.add.func)  # queue "default" is not in QUEUES
        assert task(djtasks.add.func, queue_name="emails").enqueue(1, 1).task.queue_name == "emails"


def test_check_reports_a_queue_missing_from_queue_config(default_queue):
    with override_settings(TASKS={"default": {"BACKEND": TASKHUB, "QUEUES": ["default", "ghost"]}}):
        backend = task_backends["default"]
        assert list(backend.check()) == [], "database checks need databases, as Django's own do"
        errors = list(backend.check(databases=["default"]))
    assert [(e.id, "ghost" in e.msg) for e in errors] == [("tasks.E102", True)]


def test_check_reports_a_database_without_skip_locked(monkeypatch):
    from tasks.backends import backend as backend_module

    monkeypatch.setattr(backend_module, "skip_locked_problem", lambda **kwargs: "MariaDB 10.3 has no SKIP LOCKED")
    errors = list(default_task_backend.check(databases=["default"]))
    assert [e.id for e in errors] == ["tasks.E101"]


# --- Deferral and priority -------------------------------------------------------------------------


def test_run_after_becomes_run_at_and_the_task_waits_for_it(default_queue):
    later = timezone.now() + timedelta(hours=1)
    result = djtasks.add.using(run_after=later).enqueue(1, 1)
    assert row_of(result).run_at == later
    assert result.task.run_after == later
    assert djtasks.add.get_result(result.id).task.run_after == later
    assert transitions.claim(worker_id="w", queues=[default_queue], limit=10).tasks == []
    claimed = transitions.claim(worker_id="w", queues=[default_queue], limit=10, now=later + timedelta(seconds=1))
    assert [task.pk for task in claimed.tasks] == [int(result.id)]


def test_higher_priority_is_claimed_first_on_djangos_scale(default_queue):
    ids = {p: djtasks.add.using(priority=p).enqueue(p, 0).id for p in (0, -100, 100, 5, -5)}
    claimed = transitions.claim(worker_id="w", queues=[default_queue], limit=10).tasks
    assert [str(task.pk) for task in claimed] == [ids[p] for p in (100, 5, 0, -5, -100)]


# --- get_result --------------------------------------------------------------------------------------


def test_get_result_rebuilds_the_result(default_queue):
    result = djtasks.echo.using(priority=7).enqueue(1, x="y")
    again = default_task_backend.get_result(result.id)
    assert (again.id, again.status, again.args, again.kwargs) == (result.id, TaskResultStatus.READY, [1], {"x": "y"})
    assert (again.task.func, again.task.priority, again.task.queue_name) == (djtasks.echo.func, 7, "default")
    assert again.enqueued_at == result.enqueued_at
    assert djtasks.echo.get_result(result.id).id == result.id


@pytest.mark.parametrize("result_id", ["999999", "not-a-number", "", "1.5"])
def test_get_result_of_an_unknown_id_raises_task_result_does_not_exist(default_queue, result_id):
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result_id)


def test_a_registry_handlers_task_is_no_django_task_result(alice, default_queue):
    handler_task = services.task_enqueue(user=alice, task_type="echo").task
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(handler_task.pk))


def test_get_result_of_another_task_raises_a_mismatch(default_queue):
    from tasks.backends.compat import FRAMEWORK

    mismatch = __import__(f"{FRAMEWORK}.exceptions", fromlist=["TaskResultMismatch"]).TaskResultMismatch
    result = djtasks.add.enqueue(1, 1)
    with pytest.raises(mismatch):
        djtasks.echo.get_result(result.id)


def test_a_cancelled_task_reads_as_failed_with_an_error_naming_the_cancellation(default_queue):
    result = djtasks.add.enqueue(1, 1)
    services.task_cancel(task=row_of(result))
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in result.errors] == ["tasks.errors.TaskCancelled"]
    assert (result.worker_ids, result.attempts) == ([], 0)
    assert result.is_finished


def test_worker_ids_and_errors_come_from_the_attempt_history(default_queue):
    """A task retried twice: one entry per failed attempt, and the current claim for the last."""
    from tasks.outcomes import Outcome, OutcomeKind

    result = djtasks.add.enqueue(1, 1)
    workers = ["w1", "w2", "w3"]
    for worker in workers:
        claimed = transitions.claim(
            worker_id=worker, queues=[default_queue], limit=1, now=timezone.now() + timedelta(days=1)
        ).tasks[0]
        if worker != "w3":
            failure = Outcome(
                claimed.pk,
                OutcomeKind.RETRYABLE,
                error=f"boom at {worker}",
                exception="builtins.OSError",
                retry_delay=0,
            )
            transitions.record_outcomes(
                [(claimed, failure)], worker_id=worker, queues={default_queue.pk: default_queue}
            )
    result.refresh()
    assert (result.status, result.worker_ids, result.attempts) == (TaskResultStatus.RUNNING, workers, 3)
    assert [(e.exception_class_path, e.traceback) for e in result.errors] == [
        ("builtins.OSError", "boom at w1"),
        ("builtins.OSError", "boom at w2"),
    ]
    assert result.errors[0].exception_class is OSError
    assert result.started_at < result.last_attempted_at, "started_at is the first attempt's start"


# --- Transactions ----------------------------------------------------------------------------------


def test_inside_atomic_the_task_commits_or_rolls_back_with_the_callers_transaction(default_queue):
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        djtasks.add.enqueue(1, 1)
        assert TaskQueue.objects.count() == 1, "written at once, inside the transaction"
        raise Rollback
    assert not TaskQueue.objects.exists()


def test_enqueue_on_commit_inserts_once_the_transaction_commits(default_queue, django_capture_on_commit_callbacks):
    with override_settings(TASKS=taskhub_settings(ENQUEUE_ON_COMMIT=True)):
        add = task(djtasks.add.func)
        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                result = add.enqueue(2, 3)
                assert (result.id, TaskQueue.objects.count()) == ("", 0)
        assert result.id and row_of(result).payload["args"] == [2, 3]
        assert result.enqueued_at is not None


# --- The REST API and the admin ----------------------------------------------------------------------


def test_the_rest_api_refuses_a_django_tasks_dotted_path(alice_api, default_queue):
    response = alice_api.post("/api/tasks/", {"task_type": "tasks.tests.djtasks.add"}, format="json")
    assert response.status_code == 400, response.content
    assert (
        "task_type" in response.json()["errors"] if "errors" in response.json() else "task_type" in str(response.json())
    )
    assert not TaskQueue.objects.exists()


def test_the_rest_api_shows_a_django_tasks_dotted_path_as_its_task_type(alice, alice_api, default_queue):
    with enqueue_as(alice):
        result = djtasks.add.enqueue(1, 2)
    body = alice_api.get(f"/api/tasks/{result.id}/").json()
    assert (body["task_type"], body["kind"], body["payload"]) == (
        "tasks.tests.djtasks.add",
        "django",
        {"args": [1, 2], "kwargs": {}},
    )
    listed = alice_api.get("/api/tasks/", {"task_type": "tasks.tests.djtasks.add"}).json()["results"]
    assert [task["id"] for task in listed] == [int(result.id)]


def test_the_admin_shows_a_django_tasks_dotted_path(admin_client, default_queue):
    result = djtasks.add.enqueue(1, 2)
    page = admin_client.get(f"/admin/tasks/taskqueue/{result.id}/change/").content.decode()
    assert "tasks.tests.djtasks.add" in page
    changelist = admin_client.get("/admin/tasks/taskqueue/").content.decode()
    assert "tasks.tests.djtasks.add" in changelist


def test_a_deferred_run_after_in_the_past_is_accepted_and_runnable_from_its_creation(default_queue):
    past = datetime(2020, 1, 1, tzinfo=UTC)
    row = row_of(djtasks.add.using(run_after=past).enqueue(1, 1))
    assert row.run_at == row.created_at  # not years late, and not ahead of older tasks


def test_a_paused_queue_still_takes_tasks(default_queue):
    QueueConfig.objects.filter(pk=default_queue.pk).update(is_paused=True)
    assert djtasks.add.enqueue(1, 1).status == TaskResultStatus.READY


def test_a_tasks_own_timeout_is_its_lease_at_claim_and_renewal(default_queue):
    own = djtasks.add.using(timeout=5).enqueue(1, 1)
    queued = djtasks.add.enqueue(2, 2)
    now = timezone.now()
    claimed = transitions.claim(worker_id="w", queues=[default_queue], limit=10, now=now).tasks
    leases = dict(TaskQueue.objects.values_list("pk", "lease_expires_at"))
    assert leases[int(own.id)] == now + timedelta(seconds=5)
    assert leases[int(queued.id)] == now + timedelta(seconds=default_queue.task_timeout_seconds)
    later = now + timedelta(seconds=2)
    transitions.renew_leases(
        worker_id="w", tasks=claimed, lease_seconds={default_queue.pk: default_queue.task_timeout_seconds}, now=later
    )
    leases = dict(TaskQueue.objects.values_list("pk", "lease_expires_at"))
    assert leases[int(own.id)] == later + timedelta(seconds=5)
    assert leases[int(queued.id)] == later + timedelta(seconds=default_queue.task_timeout_seconds)


def test_the_backends_bounds_are_the_models():
    from tasks import models
    from tasks.backends import backend

    assert (backend.MAX_ATTEMPTS_LIMIT, backend.TASK_TIMEOUT_MAX_SECONDS) == (
        models.MAX_ATTEMPTS_LIMIT,
        models.TASK_TIMEOUT_MAX_SECONDS,
    )


def test_the_backend_can_be_created_before_the_apps_are_loaded():
    """A @task in a module Django imports while loading apps creates the backend that early."""
    code = (
        "from django.utils.module_loading import import_string\n"
        "backend = import_string('tasks.backends.TaskHubBackend')('default', {'QUEUES': []})\n"
        "print(type(backend).__name__)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "TaskHubBackend"), done.stderr


def test_the_workers_name_for_a_django_task_is_the_models():
    from tasks.worker.messages import DJANGO_KIND

    assert DJANGO_KIND == TaskKind.DJANGO
