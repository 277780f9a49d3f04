"""Carry out the console's bulk actions: each queued or interrupted one from its cursor, in batches."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks.bulk import BATCH_SIZE, SLEEP_COEF, bulk_actions_run_pending


class Command(BaseCommand):
    help = "Run the console's bulk actions (resumes interrupted ones from their cursor). Loops unless --once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run what is pending now, then exit.")
        parser.add_argument("--interval", type=float, default=2.0, help="Seconds between looks (default 2).")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="Tasks per transaction (default 1000).")
        parser.add_argument(
            "--sleep-coef",
            type=float,
            default=SLEEP_COEF,
            help=f"After each batch, sleep this many times as long as it took (default {SLEEP_COEF:g}; 0: no pause).",
        )

    def handle(self, *args, once: bool, interval: float, batch_size: int, sleep_coef: float, **options) -> None:
        if not 1 <= batch_size <= 10_000:
            raise CommandError("--batch-size must be between 1 and 10000")
        if not 0 <= sleep_coef <= 100:
            raise CommandError("--sleep-coef must be between 0 and 100")
        while True:
            looked = bulk_actions_run_pending(batch_size=batch_size, sleep_coef=sleep_coef)
            if once:
                self.stdout.write(f"Ran {looked} bulk action(s).")
                return
            time.sleep(max(interval, 0.1))
