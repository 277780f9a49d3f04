"""Gauges read from the database at scrape time, with a few cheap indexed queries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.db.session import handle_database_error
from diagnostics.monitor import mysql_server_usage
from tasks.models import ACTIVE_STATUSES, QueueConfig, TaskHourlyStats, TaskQueue, TaskStatus, TaskStatusCount
from tasks.selectors import fair_shares

logger = logging.getLogger("taskhub.metrics")


class DatabaseCollector(Collector):
    """Queue depth and age, task outcomes and durations, and server connection usage."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("taskhub_db_up", "1 when the scrape could read the database.")
        try:
            families = [*self._queue_families(), *self._connection_families()]
        except DatabaseError as exc:
            handle_database_error(exc)
            logger.warning("metrics scrape could not read the database: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _queue_families(self) -> list[Metric]:
        names = dict(QueueConfig.objects.values_list("id", "name"))
        now = timezone.now()

        tasks = GaugeMetricFamily(
            "taskhub_queue_tasks",
            "Tasks by queue and status: pending/running counted live, finished ones from task_status_count.",
            labels=["queue", "status"],
        )
        # Served by task_claim_idx (status, queue, ...): pending and running rows are few.
        active = TaskQueue.objects.filter(status__in=ACTIVE_STATUSES).values_list("queue_id", "status")
        for queue_id, status, count in active.annotate(n=Count("id")).order_by():
            tasks.add_metric([names.get(queue_id, str(queue_id)), status], count)
        finished = TaskStatusCount.objects.values_list("queue_id", "status").annotate(n=Sum("count")).order_by()
        for queue_id, status, count in finished:
            tasks.add_metric([names.get(queue_id, str(queue_id)), status], count)

        oldest = GaugeMetricFamily(
            "taskhub_queue_oldest_pending_age_seconds",
            "Seconds the oldest runnable pending task of each queue has waited (0 when none).",
            labels=["queue"],
        )
        waiting = dict(
            TaskQueue.objects.runnable(now).values_list("queue_id").annotate(oldest=Min("run_at")).order_by()
        )
        for queue_id, name in sorted(names.items(), key=lambda item: item[1]):
            run_at = waiting.get(queue_id)
            oldest.add_metric([name], max((now - run_at).total_seconds(), 0.0) if run_at else 0.0)

        return [tasks, oldest, *self._fairness_families(names, now), *self._duration_families(names, now)]

    def _fairness_families(self, names: dict[int, str], now) -> list[Metric]:
        mode = GaugeMetricFamily(
            "taskhub_queue_fairness", "1 for each queue's fairness mode (none, owner).", labels=["queue", "mode"]
        )
        owners = GaugeMetricFamily(
            "taskhub_queue_active_owners", "Owners with runnable tasks in each queue.", labels=["queue"]
        )
        at_limit = GaugeMetricFamily(
            "taskhub_queue_keys_at_limit",
            "Concurrency keys with per_key_concurrency tasks running (0 when the queue has no per-key limit).",
            labels=["queue"],
        )
        throttled = GaugeMetricFamily(
            "taskhub_queue_rate_throttled_claims",
            "Claims that left runnable tasks behind for want of rate-limit tokens (grows; since each bucket's creation).",
            labels=["queue"],
        )
        queues = list(QueueConfig.objects.order_by("name"))
        shares = fair_shares(now, queues)
        for queue in queues:
            mode.add_metric([queue.name, queue.fairness], 1)
            owners.add_metric([queue.name], shares.owners.get(queue.pk, 0))
            at_limit.add_metric([queue.name], shares.keys_at_limit(queue))
            throttled.add_metric([queue.name], shares.throttled.get(queue.pk, 0))
        return [mode, owners, at_limit, throttled]

    def _duration_families(self, names: dict[int, str], now) -> list[Metric]:
        hours = settings.TASKHUB_STATS_WINDOW_HOURS
        window = f"over the last {hours} h (task_hourly_stats)"
        finished = GaugeMetricFamily(
            "taskhub_tasks_finished_recent",
            f"Tasks finished {window}, by queue and outcome.",
            labels=["queue", "status"],
        )
        mean_wait = GaugeMetricFamily(
            "taskhub_task_wait_seconds_mean", f"Mean wait from creation to start {window}.", labels=["queue"]
        )
        mean_run = GaugeMetricFamily("taskhub_task_run_seconds_mean", f"Mean run time {window}.", labels=["queue"])
        # Served by task_hourly_stats_hour_idx.
        rows = (
            TaskHourlyStats.objects.filter(hour__gte=now - timedelta(hours=hours))
            .values("queue_id")
            .annotate(
                succeeded=Sum("succeeded"),
                failed=Sum("failed"),
                cancelled=Sum("cancelled"),
                started=Sum("started"),
                wait=Sum("wait_seconds_sum"),
                run=Sum("run_seconds_sum"),
            )
            .order_by()
        )
        for row in rows:
            name = names.get(row["queue_id"], str(row["queue_id"]))
            for status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED):
                finished.add_metric([name, status.value], row[status.value])
            if row["started"]:
                mean_wait.add_metric([name], row["wait"] / row["started"])
                mean_run.add_metric([name], row["run"] / row["started"])
        return [finished, mean_wait, mean_run]

    def _connection_families(self) -> list[Metric]:
        if connection.vendor != "mysql":
            return []
        usage = mysql_server_usage()
        families = []
        for key, name, doc in (
            ("threads_connected", "taskhub_db_threads_connected", "Server Threads_connected."),
            ("max_connections", "taskhub_db_max_connections", "Server max_connections."),
            ("max_used_connections", "taskhub_db_max_used_connections", "Server Max_used_connections."),
            ("usage_ratio", "taskhub_db_connection_usage_ratio", "Threads_connected / max_connections."),
        ):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], usage[key])
            families.append(family)
        return families
