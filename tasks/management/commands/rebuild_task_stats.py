"""Recompute the statistics counters from task_queue (after manual SQL or a restore)."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from tasks import counters, hour_stats
from tasks.models import MINUTE_STATS_RETENTION_DAYS, TaskHourlyStats, TaskHourStats, TaskMinuteStats, TaskStatusCount


class Command(BaseCommand):
    help = (
        "Recompute task_status_count, task_hourly_stats and task_minute_stats (the last "
        f"{MINUTE_STATS_RETENTION_DAYS} days) from task_queue, and task_hour_stats from the minutes, "
        "in one transaction."
    )

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            counters.rebuild()
            hour_stats.rebuild()
        self.stdout.write(
            f"Rebuilt {TaskStatusCount.objects.count()} status counter(s), "
            f"{TaskHourlyStats.objects.count()} hourly row(s), "
            f"{TaskMinuteStats.objects.count()} per-minute row(s) and "
            f"{TaskHourStats.objects.count()} per-hour row(s)."
        )
