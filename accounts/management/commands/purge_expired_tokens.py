"""Purge expired refresh-token rows and throttle windows in bounded batches (cron-safe)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.purge import purge_expired


class Command(BaseCommand):
    help = "Delete expired outstanding/blacklisted tokens, token families and throttle windows in small batches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=1000, help="Rows per transaction (default 1000).")
        parser.add_argument("--max-batches", type=int, default=1000, help="Stop after this many batches.")
        parser.add_argument("--sleep", type=float, default=0.0, help="Seconds to pause between batches.")

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size, max_batches, pause = options["batch_size"], options["max_batches"], options["sleep"]
        if not 1 <= batch_size <= 100_000:
            raise CommandError("--batch-size must be between 1 and 100000.")
        if max_batches < 1:
            raise CommandError("--max-batches must be at least 1.")
        if not 0 <= pause <= 60:
            raise CommandError("--sleep must be between 0 and 60 seconds.")
        result = purge_expired(batch_size=batch_size, max_batches=max_batches, pause=pause)
        summary = ", ".join(f"{label}: {count}" for label, count in result.deleted.items())
        self.stdout.write(f"Purged in {result.batches} batch(es): {summary}.")
        if not result.finished:
            self.stdout.write(f"Stopped after --max-batches={max_batches}; expired rows remain: run again.")
