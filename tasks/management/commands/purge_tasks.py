"""Delete finished tasks older than N days, in bounded batches (safe to run from cron)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tasks.models import FINISHED_STATUSES, MINUTE_STATS_RETENTION_DAYS
from tasks.retention import (
    PurgeResult,
    hour_stats_prune,
    minute_stats_prune,
    schedule_fires_prune,
    tasks_purge_finished,
)


class Command(BaseCommand):
    help = "Delete succeeded/failed/cancelled tasks that finished more than --older-than days ago."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=float, required=True, metavar="DAYS", help="Age in days (> 0).")
        parser.add_argument(
            "--status",
            action="append",
            choices=FINISHED_STATUSES,
            help="Only these statuses (repeatable). Default: all finished statuses.",
        )
        parser.add_argument("--batch-size", type=int, default=1000, help="Rows per transaction (default 1000).")
        parser.add_argument("--max-batches", type=int, default=None, help="Stop after this many batches.")

    def handle(
        self, *args, older_than: float, status: list[str] | None, batch_size: int, max_batches: int | None, **options
    ) -> None:
        if older_than <= 0:
            raise CommandError("--older-than must be a positive number of days")
        if batch_size < 1 or batch_size > 50_000:
            raise CommandError("--batch-size must be between 1 and 50000")
        before = timezone.now() - timedelta(days=older_than)
        verbose = options["verbosity"] > 1

        def report(progress: PurgeResult) -> None:
            if verbose:
                self.stdout.write(f"  batch {progress.batches}: {progress.deleted} deleted so far")

        result = tasks_purge_finished(
            before=before,
            statuses=status or FINISHED_STATUSES,
            batch_size=batch_size,
            max_batches=max_batches,
            on_batch=report,
        )
        self.stdout.write(
            f"Deleted {result.deleted} finished task(s) older than {before:%Y-%m-%d %H:%M} UTC in {result.batches} batch(es)."
        )
        fires = schedule_fires_prune(before=before)
        self.stdout.write(f"Deleted {fires} schedule fire record(s) older than that (each schedule keeps its latest).")
        rollup_before = timezone.now() - timedelta(days=MINUTE_STATS_RETENTION_DAYS)
        minutes = minute_stats_prune(before=rollup_before, batch_size=batch_size)
        hours = hour_stats_prune(before=rollup_before, batch_size=batch_size)
        self.stdout.write(
            f"Deleted {minutes} per-minute and {hours} per-hour statistics row(s) older than "
            f"{MINUTE_STATS_RETENTION_DAYS} days."
        )
