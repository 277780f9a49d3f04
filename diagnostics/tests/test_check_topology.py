"""The topology guard: the server's own answer, the two-connection lock probe and the claim query's plan.

The probe and EXPLAIN run for real on MySQL/MariaDB. A proxy routing locking reads elsewhere is
played by pointing the probe's second connection at another copy of the database.
"""

from __future__ import annotations

import pytest
from django.core.checks import ERROR, WARNING
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.mysql.base import DatabaseWrapper as MySQLDatabaseWrapper
from django.utils import timezone

from core.db import topology
from core.db.features import identify_server, identity_problem
from diagnostics.checks import topology as topology_checks
from diagnostics.tests.conftest import DEFAULT_DATABASE, by_id
from tasks import transitions
from tasks.tests.conftest import enqueue_many
from tasks.tests.replicas import SnapshotReplica

mysql = pytest.mark.mysql


@pytest.mark.parametrize(
    ("answer", "product", "version", "refused"),
    [
        ("10.11.6-MariaDB-0+deb12u1-log", "MariaDB", (10, 11, 6), False),
        ("5.5.5-10.6.18-MariaDB", "MariaDB", (10, 6, 18), False),
        ("10.5.25-MariaDB", "MariaDB", (10, 5, 25), True),
        ("11.4.2-MariaDB", "MariaDB", (11, 4, 2), False),
        ("8.0.36-0ubuntu0.22.04.1", "MySQL", (8, 0, 36), False),
        ("8.0.0-dmr-log", "MySQL", (8, 0, 0), True),
        ("5.7.44", "MySQL", (5, 7, 44), True),
        ("8.0.11-TiDB-v7.5.1", "TiDB", (8, 0, 11), True),
        ("5.7.25-TiDB-v6.5.0", "TiDB", (5, 7, 25), True),
    ],
)
def test_the_servers_version_answer_says_what_it_is_and_whether_workers_may_claim(answer, product, version, refused):
    identity = identify_server(answer)
    assert (identity.product, identity.version) == (product, version)
    problem = identity_problem(identity)
    assert (problem is not None) is refused
    if product == "TiDB":
        assert "tidb#69720" in problem


@pytest.fixture
def copy_of_the_database(transactional_db, default_queue):
    """Another database holding the same rows: what a replica behind a proxy looks like."""
    replica = SnapshotReplica()
    replica.take()
    yield replica
    replica.drop()


def connection_to(settings_dict: dict, alias: str) -> MySQLDatabaseWrapper:
    return MySQLDatabaseWrapper(settings_dict, alias)


@mysql
@pytest.mark.django_db(transaction=True)
def test_the_lock_probe_passes_when_both_connections_reach_one_server():
    result = topology.probe_connections(DEFAULT_DB_ALIAS, connections)
    assert (result.problem, result.doubt) == (None, None)
    assert result.row_id is not None


@mysql
def test_the_lock_probe_fails_when_the_second_locking_read_reaches_another_server(copy_of_the_database):
    holder = connections.create_connection(DEFAULT_DB_ALIAS)
    misrouted = connection_to(copy_of_the_database.settings_dict, "misrouted")
    try:
        result = topology.lock_probe(holder, misrouted)
    finally:
        holder.close()
        misrouted.close()
    assert result.problem and "different servers" in result.problem


@mysql
def test_check_production_names_a_failed_lock_probe(copy_of_the_database, monkeypatch):
    def misrouted_probe(alias, handler):
        holder = handler.create_connection(alias)
        other = connection_to(copy_of_the_database.settings_dict, "misrouted")
        try:
            return topology.lock_probe(holder, other)
        finally:
            holder.close()
            other.close()

    assert by_id(topology_checks.check_lock_probe(databases=DEFAULT_DATABASE)) == {}
    monkeypatch.setattr(topology, "probe_connections", misrouted_probe)
    assert by_id(topology_checks.check_lock_probe(databases=DEFAULT_DATABASE)) == {"diagnostics.E034": ERROR}


@mysql
def test_a_lock_probe_whose_second_connection_misses_the_row_is_inconclusive(copy_of_the_database, monkeypatch):
    """A second connection reaching a database without the probe row (a replica far behind) proves nothing."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM `{copy_of_the_database.name}`.{topology.PROBE_TABLE}")

    def lagging_probe(alias, handler):
        holder = handler.create_connection(alias)
        other = connection_to(copy_of_the_database.settings_dict, "lagging")
        try:
            return topology.lock_probe(holder, other)
        finally:
            holder.close()
            other.close()

    monkeypatch.setattr(topology, "probe_connections", lagging_probe)
    assert by_id(topology_checks.check_lock_probe(databases=DEFAULT_DATABASE)) == {"diagnostics.W032": WARNING}


@mysql
@pytest.mark.django_db
def test_the_claim_query_plan_passes_and_a_sorting_or_scanning_one_fails(alice, default_queue):
    enqueue_many(alice, 50)
    params = [default_queue.pk, connection.ops.adapt_datetimefield_value(timezone.now()), 20]
    assert topology.plan_problem(connection, transitions.CLAIM_SQL_MYSQL, params, table="task_queue") is None
    assert transitions.claim_plan_problem() is None
    sorting = transitions.CLAIM_SQL_MYSQL.replace("ORDER BY priority DESC, run_at, id", "ORDER BY created_at")
    assert "filesort" in topology.plan_problem(connection, sorting, params, table="task_queue")
    scanning = (
        "SELECT id FROM task_queue USE INDEX () WHERE payload IS NOT NULL AND queue_id = %s "
        "AND run_at <= %s LIMIT %s FOR UPDATE SKIP LOCKED"
    )
    assert "reads all of task_queue" in topology.plan_problem(connection, scanning, params, table="task_queue")


@mysql
@pytest.mark.django_db
def test_check_production_fails_a_claim_query_that_would_sort(monkeypatch, default_queue):
    assert by_id(topology_checks.check_claim_plan(databases=DEFAULT_DATABASE)) == {}
    sorting = transitions.CLAIM_SQL_MYSQL.replace("FORCE INDEX (task_claim_idx) ", "").replace(
        "ORDER BY priority DESC, run_at, id", "ORDER BY created_at"
    )
    monkeypatch.setattr(transitions, "CLAIM_SQL_MYSQL", sorting)
    assert by_id(topology_checks.check_claim_plan(databases=DEFAULT_DATABASE)) == {"diagnostics.E035": ERROR}


@mysql
@pytest.mark.django_db
def test_a_writable_primary_passes():
    assert by_id(topology_checks.check_primary_writable(databases=DEFAULT_DATABASE)) == {}


@pytest.mark.sqlite
@pytest.mark.django_db
def test_on_sqlite_the_topology_checks_have_nothing_to_say():
    for check in (topology_checks.check_primary_writable, topology_checks.check_lock_probe):
        assert check(databases=DEFAULT_DATABASE) == []
    assert transitions.claim_plan_problem() is None
