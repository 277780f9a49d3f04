"""Read replica routing: which reads the replica answers, and which always go to the primary.

The replica here is a real second database (a second SQLite file, or a second database on the
MySQL/MariaDB server) holding a snapshot taken mid-test, so what a response counts shows which
database answered it.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils.dateparse import parse_datetime

from core.db.replica import BREAKER, PRIMARY, REPLICA, read_alias, replica_reads
from tasks import services
from tasks.models import TaskQueue, TaskStatus
from tasks.tests.conftest import enqueue_many
from tasks.tests.replicas import SnapshotReplica, install, route_reads, uninstall
from tasks.worker import row

pytestmark = pytest.mark.django_db(transaction=True, databases=[DEFAULT_DB_ALIAS, REPLICA])

STATS = "/api/tasks/statistics"
QUEUE_STATUS = "/api/tasks/queue-status"
TASKS = "/api/tasks/"


@pytest.fixture(scope="module", autouse=True)
def replica_database(django_db_setup, django_db_blocker):
    """The `replica` alias exists before each test's database set-up, so the tests may use it."""
    with django_db_blocker.unblock():
        database = SnapshotReplica()
        database.take()
        install(database)
    yield database
    with django_db_blocker.unblock():
        uninstall()
        database.drop()


@pytest.fixture
def replica(replica_database, settings, default_queue, alice):
    """Three of alice's tasks on both databases; then the replica stops following the primary."""
    enqueue_many(alice, 3)
    replica_database.take()
    route_reads(settings)
    return replica_database


@pytest.fixture
def alice_client(client_for, alice):
    return client_for(alice)


def test_statistics_are_read_from_the_replica_and_say_so(replica, alice, alice_client):
    enqueue_many(alice, 2)  # on the primary only
    with CaptureQueriesContext(connections[REPLICA]) as on_replica:
        body = alice_client.get(STATS).json()
    assert body["by_status"]["pending"] == 3
    assert body["source"] == "replica"
    assert on_replica.captured_queries
    # No replication status to read and no worker heartbeat in it: how old the data is is unknown.
    assert (body["as_of"], body["lag_seconds"], body["stale"]) == (None, None, True)


def test_the_replica_bounds_its_age_by_the_newest_worker_heartbeat_it_holds(replica, alice, alice_client):
    worker = row.worker_register(worker_id=row.new_worker_id(), queues=[], concurrency=1)  # a live worker's row
    replica.take()
    enqueue_many(alice, 2)
    body = alice_client.get(STATS).json()
    assert (body["source"], body["by_status"]["pending"]) == ("replica", 3)
    assert parse_datetime(body["as_of"]) == worker.last_heartbeat_at
    assert 0 <= body["lag_seconds"] < 60


def test_queue_status_and_the_task_list_are_read_from_the_replica(replica, alice, alice_client):
    enqueue_many(alice, 2)
    [default] = [q for q in alice_client.get(QUEUE_STATUS).json() if q["name"] == "default"]
    assert default["pending"] == 3
    assert len(alice_client.get(TASKS).json()["results"]) == 3


def test_a_users_reads_right_after_their_own_write_go_to_the_primary(replica, alice, bob, alice_client, client_for):
    created = alice_client.post(TASKS, {"task_type": "echo", "payload": {}}, format="json")
    assert created.status_code == 201
    mine = alice_client.get(STATS).json()
    assert (mine["source"], mine["by_status"]["pending"], mine["lag_seconds"], mine["stale"]) == (
        "primary",
        4,
        0,
        False,
    )
    assert len(alice_client.get(TASKS).json()["results"]) == 4
    # Another user's reads are not pulled back to the primary by alice's write.
    assert client_for(bob).get(STATS).json()["source"] == "replica"


def test_a_cache_that_is_away_never_fails_a_write_and_keeps_reads_on_the_primary(replica, alice_client, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    created = alice_client.post(TASKS, {"task_type": "echo", "payload": {}}, format="json")
    assert created.status_code == 201
    body = alice_client.get(STATS).json()
    assert (body["source"], body["by_status"]["pending"]) == ("primary", 4)


def test_a_task_just_enqueued_is_found_at_once(replica, alice_client):
    task_id = alice_client.post(TASKS, {"task_type": "echo", "payload": {}}, format="json").json()["id"]
    assert alice_client.get(f"{TASKS}{task_id}/").status_code == 200


def test_task_detail_never_reads_the_replica(replica, alice, alice_client):
    [task] = enqueue_many(alice, 1)  # on the primary only
    with CaptureQueriesContext(connections[REPLICA]) as on_replica:
        assert alice_client.get(f"{TASKS}{task.pk}/").status_code == 200
    assert on_replica.captured_queries == []


def test_reads_inside_a_transaction_and_all_writes_go_to_the_primary(replica, alice):
    with replica_reads(alice) as source:
        assert (source, read_alias()) == (REPLICA, REPLICA)
        assert TaskQueue.objects.count() == 3
        with transaction.atomic():
            assert read_alias() == PRIMARY
            services.task_enqueue(user=alice, task_type="echo")
            assert TaskQueue.objects.count() == 4  # sees its own write
        assert TaskQueue.objects.count() == 3  # the replica again, which never saw it
    assert read_alias() == PRIMARY
    assert TaskQueue.objects.count() == 4


def test_without_a_replica_every_read_is_the_primarys(default_queue, alice):
    with replica_reads(alice) as source:
        assert (source, read_alias()) == (PRIMARY, PRIMARY)


def test_a_worker_never_reads_the_replica(replica, alice):
    enqueue_many(alice, 2)
    with CaptureQueriesContext(connections[REPLICA]) as on_replica:
        call_command("run_worker", "--burst", "--queue", "default")
    assert on_replica.captured_queries == []
    assert TaskQueue.objects.using(DEFAULT_DB_ALIAS).filter(status=TaskStatus.SUCCEEDED).count() == 5


def test_the_db_monitor_and_health_report_the_replica(replica, staff, client_for):
    monitor = client_for(staff).get("/api/tasks/db-monitor").json()
    assert monitor["replica"]["alias"] == REPLICA
    assert "password" not in str(monitor["replica"]).lower()
    health = client_for(staff).get("/health/?format=json")
    assert health.status_code == 200
    assert any(name.startswith("ReplicaLag(") for name in health.json())


def test_while_the_breaker_is_open_statistics_come_from_the_primary_and_say_fallback(
    replica, alice, alice_client, caplog
):
    enqueue_many(alice, 2)  # on the primary only
    lost = OperationalError(2003, "Can't connect to server on 'replica-host'")
    try:
        with caplog.at_level("WARNING", logger="taskhub.db"):
            BREAKER.trip(lost)
            BREAKER.trip(lost)  # the same outage: not logged again
        with CaptureQueriesContext(connections[REPLICA]) as on_replica:
            body = alice_client.get(STATS).json()
        assert on_replica.captured_queries == []
        assert (body["source"], body["fallback"], body["by_status"]["pending"]) == ("primary", True, 5)
        assert [r.getMessage() for r in caplog.records].count(
            "the read replica cannot be reached (Can't connect to server on 'replica-host' (error 2003)): its reads "
            "go to the primary, trying it again every 5s"
        ) == 1
    finally:
        BREAKER.succeeded()
    body = alice_client.get(STATS).json()
    assert (body["source"], body["fallback"], body["by_status"]["pending"]) == ("replica", False, 3)
