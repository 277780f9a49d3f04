"""Claims really exclude each other on this topology: a writable primary, locks seen by every connection, an indexed plan.

The same checks the worker runs before its first claim (`tasks.worker.db.WorkerDatabase.ensure_usable`),
reported with stable ids. The server version (TiDB included) is `database.check_server_version`.
"""

from __future__ import annotations

from django.core.checks import CheckMessage
from django.db import DEFAULT_DB_ALIAS, connection, connections

from core.db import topology
from diagnostics.checks.messages import error, ok, warning
from diagnostics.checks.registration import database_check
from tasks.transitions import claim_plan_problem

READ_ONLY = "topology.read_only"
LOCK_PROBE = "topology.lock_probe"
CLAIM_PLAN = "topology.claim_plan"


@database_check(READ_ONLY, mysql_only=True)
def check_primary_writable() -> list[CheckMessage]:
    """The server TaskHub writes to is not read-only (`@@read_only`): not a replica, not a demoted primary."""
    if topology.is_read_only(connection):
        return [
            warning(
                READ_ONLY,
                "diagnostics.W031",
                "The database server is read-only (@@read_only = 1): it is a replica or a demoted primary, and "
                "every enqueue, claim and outcome will fail on it.",
                "Point MYSQL_HOST at the writable primary (replicas belong in DATABASE_REPLICA_URL).",
            )
        ]
    return [ok(READ_ONLY, "The database server is writable (@@read_only = 0).")]


@database_check(LOCK_PROBE, mysql_only=True)
def check_lock_probe() -> list[CheckMessage]:
    """Two new connections, as two workers: a row one locks FOR UPDATE SKIP LOCKED, the other cannot lock."""
    result = topology.probe_connections(DEFAULT_DB_ALIAS, connections)
    if result.problem:
        return [error(LOCK_PROBE, "diagnostics.E034", f"Lock probe failed: {result.problem}.", topology.PROBE_REMEDY)]
    if result.doubt:
        return [
            warning(
                LOCK_PROBE,
                "diagnostics.W032",
                f"Lock probe inconclusive: {result.doubt}.",
                "Check that every connection reaches the same primary (no replica behind a proxy), then run the check again.",
            )
        ]
    return [
        ok(
            LOCK_PROBE,
            f"A row locked with FOR UPDATE SKIP LOCKED on one connection was skipped by another "
            f"({topology.PROBE_TABLE} #{result.row_id}): claims exclude each other.",
        )
    ]


@database_check(CLAIM_PLAN, mysql_only=True)
def check_claim_plan() -> list[CheckMessage]:
    """EXPLAIN of the claim query: an index range in claim order, no full scan, no filesort."""
    problem = claim_plan_problem()
    if problem:
        return [error(CLAIM_PLAN, "diagnostics.E035", f"{problem}.", topology.PLAN_REMEDY.capitalize())]
    return [ok(CLAIM_PLAN, "The claim query reads task_claim_idx in claim order (no full scan, no filesort).")]
