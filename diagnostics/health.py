"""Health checks: /health/ (readiness), /health/live (liveness), /health/queue (the queue's state).

Readiness says whether *this instance* can serve: its database, cache and schema. The queue's
state (work waiting with no worker, an old backlog) is shared by every instance and can be pushed
by any user (enqueue tasks, nobody runs them): were it part of readiness, a load balancer would
pull every instance at once, turning a slow queue into an outage. So it is its own group, for
monitoring and alerting, never for routing.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Min
from django.db.models.functions import Greatest
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from core import metrics
from core.db.replica import replica_configured, replica_state
from core.db.session import handle_database_error
from tasks.models import TaskQueue, WorkerProcess


class _RequestConnectionCheck(HealthCheck):
    """A check that queries through the request's own connection (the middleware cleans it).

    django-health-check runs plain `run()` methods on an executor thread, where each probe
    would open (and leak) a connection of its own; running thread-sensitively reuses the
    request thread's persistent connection instead.
    """

    async def run(self) -> None:
        try:
            await sync_to_async(self.check, thread_sensitive=True)()
        except DatabaseError as exc:
            handle_database_error(exc)
            raise ServiceUnavailable(f"database error: {type(exc).__name__}") from exc

    def check(self) -> None:
        raise NotImplementedError


@dataclasses.dataclass
class Migrations(_RequestConnectionCheck):
    """Every migration this code knows about has been applied."""

    def check(self) -> None:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in plan[:5])
            raise ServiceUnavailable(f"{len(plan)} unapplied migration(s): {names}")


def _work_waiting():
    """Runnable tasks in queues that are not paused (a paused queue's work is meant to wait)."""
    return TaskQueue.objects.runnable().filter(queue__is_paused=False)


@dataclasses.dataclass
class WorkersAlive(_RequestConnectionCheck):
    """Some worker sent a heartbeat recently, whenever there is work waiting to run."""

    def check(self) -> None:
        stale = timedelta(seconds=settings.TASKHUB_WORKER_STALE_SECONDS)
        if not _work_waiting().exists():
            return
        if not WorkerProcess.objects.filter(last_heartbeat_at__gte=timezone.now() - stale).exists():
            raise ServiceUnavailable(
                f"tasks are waiting and no worker sent a heartbeat in the last {stale.total_seconds():g} s"
            )


@dataclasses.dataclass
class Backlog(_RequestConnectionCheck):
    """The oldest runnable task has not waited longer than the backlog threshold.

    A task waits from when it became runnable: its `run_at`, but never before its creation (a
    `run_at` in 1970 does not make a task 56 years late).
    """

    def check(self) -> None:
        limit = settings.TASKHUB_BACKLOG_MAX_AGE_SECONDS
        oldest = _work_waiting().aggregate(oldest=Min(Greatest("run_at", "created_at")))["oldest"]
        if oldest is None:
            return
        waited = (timezone.now() - oldest).total_seconds()
        if waited > limit:
            raise ServiceUnavailable(f"the oldest runnable task has waited {waited:.0f} s (limit {limit} s)")


@dataclasses.dataclass
class ReplicaLag(_RequestConnectionCheck):
    """The read replica's lag, shown in the check's name (`SHOW REPLICA STATUS`).

    In readiness it only reports: the replica is shared by every instance, and taking them all
    out of rotation would not bring it closer. With `alert` (the queue group) a replica that
    stopped replicating or lags more than DATABASE_REPLICA_MAX_LAG_SECONDS fails the check.
    """

    alert: bool = dataclasses.field(default=False, repr=False)
    lag_seconds: float | None = None
    replicating: bool | None = None

    def check(self) -> None:
        state = replica_state()
        self.lag_seconds, self.replicating = state.lag_seconds, state.replicating
        if not self.alert:
            return
        limit = settings.DATABASE_REPLICA_MAX_LAG_SECONDS
        if not state.replicating or state.lag_seconds is None:
            raise ServiceUnavailable(
                f"the replica is not replicating ({state.error or 'a replication thread stopped'})"
            )
        if state.lag_seconds > limit:
            raise ServiceUnavailable(f"the replica lags {state.lag_seconds:g} s behind the primary (limit {limit:g} s)")


class HealthView(HealthCheckView):
    """Readiness: django-health-check's view with this instance's checks; unhealthy answers 503, not 500."""

    checks = (
        "health_check.checks.Database",
        "health_check.checks.Cache",
        "diagnostics.health.Migrations",
    )
    replica_alert = False

    def get_checks(self):
        yield from super().get_checks()
        if replica_configured():
            yield ReplicaLag(alert=self.replica_alert)

    async def get(self, request, *args, **kwargs):
        response = await super().get(request, *args, **kwargs)
        if response.status_code == 500:
            # Load balancers take a 503 as "take me out of rotation"; a 500 reads as a bug.
            response.status_code = 503
            metrics.SERVICE_UNAVAILABLE.labels(code="unhealthy").inc()
        return response


class QueueHealthView(HealthView):
    """The queue's state, shared by every instance: for alerts, never for a load balancer's routing."""

    checks = (
        "diagnostics.health.WorkersAlive",
        "diagnostics.health.Backlog",
    )
    replica_alert = True


def liveness(request: HttpRequest) -> JsonResponse:
    """Answer 200 while the process can serve requests at all; never touches the database."""
    return JsonResponse({"status": "alive"})
