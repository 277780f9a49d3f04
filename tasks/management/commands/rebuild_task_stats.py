"""Recompute the statistics counters from task_queue (after manual SQL or a restore)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from tasks import counters
from tasks.models import TaskHourlyStats, TaskStatusCount


class Command(BaseCommand):
    help = "Recompute task_status_count and task_hourly_stats from task_queue, in one transaction."

    def handle(self, *args, **options) -> None:
        counters.rebuild()
        self.stdout.write(
            f"Rebuilt {TaskStatusCount.objects.count()} status counter(s) and "
            f"{TaskHourlyStats.objects.count()} hourly row(s)."
        )
