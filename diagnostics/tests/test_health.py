"""/health/ for load balancers (503 when unhealthy), /health/queue for alerts, /health/live without the DB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import override_settings
from django.utils import timezone

from tasks.models import QueueConfig, WorkerProcess
from tasks.tests.factories import make_task

pytestmark = pytest.mark.django_db


def _health(client, path: str = "/health/"):
    response = client.get(f"{path}?format=json")
    return response.status_code, {key.split("(")[0]: value for key, value in response.json().items()}


def _worker(seconds_ago: float) -> WorkerProcess:
    beat = timezone.now() - timedelta(seconds=seconds_ago)
    return WorkerProcess.objects.create(worker_id=f"w-{seconds_ago}", hostname="h", pid=1, last_heartbeat_at=beat)


def test_a_healthy_system_answers_200_with_every_check(client):
    status, checks = _health(client)
    assert status == 200
    assert checks == {name: "OK" for name in ("Database", "Cache", "Migrations")}
    assert _health(client, "/health/queue") == (200, {"WorkersAlive": "OK", "Backlog": "OK"})


def test_readiness_does_not_depend_on_the_queue_which_any_user_can_fill(client, alice, default_queue):
    _worker(seconds_ago=600)
    make_task(alice, queue=default_queue, created_at=timezone.now() - timedelta(days=2))

    assert _health(client)[0] == 200
    assert _health(client, "/health/queue")[0] == 503


@override_settings(TASKHUB_BACKLOG_MAX_AGE_SECONDS=600)
def test_a_task_scheduled_in_1970_has_waited_only_since_it_was_created(client, alice, default_queue):
    _worker(seconds_ago=1)
    make_task(alice, queue=default_queue, run_at=datetime(1970, 1, 1, tzinfo=UTC))

    assert _health(client, "/health/queue") == (200, {"WorkersAlive": "OK", "Backlog": "OK"})


def test_an_enqueue_with_a_past_run_at_is_runnable_from_its_creation(client_for, alice, default_queue):
    body = {"task_type": "echo", "run_at": "1970-01-01T00:00:00Z"}
    task = client_for(alice).post("/api/tasks/", body, format="json").json()

    assert task["run_at"] == task["created_at"]


def test_json_is_also_served_by_accept_header(client):
    response = client.get("/health/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_dead_workers_with_work_waiting_turn_it_unhealthy(client, alice, default_queue):
    _worker(seconds_ago=600)
    make_task(alice, queue=default_queue)
    status, checks = _health(client, "/health/queue")
    assert status == 503
    assert checks["WorkersAlive"].startswith("Unavailable: tasks are waiting and no worker")


def test_dead_workers_without_work_waiting_are_fine(client, alice, default_queue):
    _worker(seconds_ago=600)
    make_task(alice, queue=default_queue, run_at=timezone.now() + timedelta(hours=1))  # scheduled, not runnable
    paused = QueueConfig.objects.create(name="paused", is_paused=True)
    make_task(alice, queue=paused)
    assert _health(client, "/health/queue")[0] == 200


def test_a_recent_heartbeat_keeps_workers_alive(client, alice, default_queue):
    _worker(seconds_ago=600)
    _worker(seconds_ago=1)
    make_task(alice, queue=default_queue)
    assert _health(client, "/health/queue")[1]["WorkersAlive"] == "OK"


@override_settings(TASKHUB_BACKLOG_MAX_AGE_SECONDS=600)
def test_a_task_waiting_longer_than_the_backlog_limit_turns_it_unhealthy(client, alice, default_queue):
    _worker(seconds_ago=1)
    waiting_since = timezone.now() - timedelta(seconds=900)
    make_task(alice, queue=default_queue, run_at=waiting_since, created_at=waiting_since)
    status, checks = _health(client, "/health/queue")
    assert status == 503
    assert checks["Backlog"].startswith("Unavailable: the oldest runnable task has waited")
    assert checks["WorkersAlive"] == "OK"


def test_an_unapplied_migration_turns_it_unhealthy(client):
    recorder = MigrationRecorder(connection)
    app, name = recorder.migration_qs.filter(app="tasks").order_by("-id").values_list("app", "name")[0]
    recorder.record_unapplied(app, name)  # rolled back with the test's transaction
    status, checks = _health(client)
    assert status == 503
    assert f"tasks.{name}" in checks["Migrations"]


@pytest.mark.parametrize("path", ["/health/live", "/health/live/"])
def test_liveness_answers_without_any_query(client, path, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_turns_it_unhealthy_but_liveness_stays_up(client, proxied_database):
    proxied_database.cut()
    status, checks = _health(client)
    assert status == 503
    assert checks["Database"].startswith("Unavailable")
    assert checks["Cache"] == "OK"
    assert client.get("/health/live").status_code == 200
