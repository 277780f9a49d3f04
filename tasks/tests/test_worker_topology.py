"""A worker refuses to start on a topology where claims would not exclude each other."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db.backends.mysql.base import DatabaseWrapper as MySQLDatabaseWrapper

from core.db import features, topology
from tasks import transitions
from tasks.models import TaskQueue, TaskStatus, WorkerProcess
from tasks.tests.conftest import enqueue_many
from tasks.tests.replicas import SnapshotReplica
from tasks.worker.db import WorkerDatabase

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True)]


def test_a_worker_refuses_tidb(monkeypatch, default_queue):
    monkeypatch.setattr(features, "read_identity", lambda conn: features.identify_server("8.0.11-TiDB-v7.5.1"))
    with pytest.raises(CommandError, match="TiDB"):
        call_command("run_worker", "--burst")
    assert not WorkerProcess.objects.exists()


def test_a_worker_refuses_a_claim_query_that_would_sort(monkeypatch, alice, default_queue):
    enqueue_many(alice, 3)
    sorting = transitions.CLAIM_SQL_MYSQL.replace("ORDER BY priority DESC, run_at, id", "ORDER BY created_at")
    monkeypatch.setattr(transitions, "CLAIM_SQL_MYSQL", sorting)
    with pytest.raises(CommandError, match="filesort"):
        call_command("run_worker", "--burst")
    assert TaskQueue.objects.filter(status=TaskStatus.PENDING).count() == 3


def test_a_worker_refuses_when_its_locking_reads_reach_another_server(monkeypatch, alice, default_queue):
    """What a proxy sending SELECT ... FOR UPDATE to a replica does, with a copy of the database as the replica."""
    enqueue_many(alice, 3)
    replica = SnapshotReplica()
    replica.take()

    def misrouted_probe(alias, handler):
        holder = handler.create_connection(alias)
        other = MySQLDatabaseWrapper(replica.settings_dict, "misrouted")
        try:
            return topology.lock_probe(holder, other)
        finally:
            holder.close()
            other.close()

    monkeypatch.setattr(topology, "probe_connections", misrouted_probe)
    try:
        with pytest.raises(CommandError, match="Lock probe failed"):
            call_command("run_worker", "--burst")
    finally:
        replica.drop()
    assert TaskQueue.objects.filter(status=TaskStatus.PENDING).count() == 3


def test_a_worker_starts_and_claims_on_a_sound_topology(alice, default_queue, caplog):
    enqueue_many(alice, 3)
    call_command("run_worker", "--burst")
    assert TaskQueue.objects.filter(status=TaskStatus.SUCCEEDED).count() == 3
    assert "read-only" not in caplog.text


def test_a_worker_on_a_read_only_server_says_so(monkeypatch, default_queue, caplog):
    monkeypatch.setattr(topology, "is_read_only", lambda conn: True)  # a replica or a demoted primary
    db = WorkerDatabase(worker_id="host:1:aaaaaa", queue_names=[], concurrency=1)
    db.ensure_usable()
    assert "the database server is read-only (@@read_only = 1)" in caplog.text
