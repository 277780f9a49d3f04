"""`manage.py run_worker`: run tasks until SIGTERM/SIGINT (or, with --burst, until none is runnable)."""

from __future__ import annotations

from argparse import ArgumentTypeError

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks.models import QueueConfig
from tasks.worker import UnsupportedDatabase, Worker

MAX_CONCURRENCY = 64


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < float("inf"):
        raise ArgumentTypeError(f"must be a positive number of seconds, not {value!r}")
    return number


class Command(BaseCommand):
    help = "Run queued tasks: claim them, run their handlers in child processes, record the outcomes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            metavar="NAME",
            help="Queue to take tasks from (repeatable; default: all).",
        )
        parser.add_argument(
            "--concurrency",
            type=_positive_int,
            default=1,
            metavar="N",
            help="Child processes running handlers (default 1).",
        )
        parser.add_argument("--burst", action="store_true", help="Exit once nothing is runnable.")
        parser.add_argument("--max-tasks", type=_positive_int, metavar="N", help="Exit after running N tasks.")
        parser.add_argument(
            "--poll-interval",
            type=_positive_float,
            metavar="S",
            help="Longest idle wait between claims in seconds (default TASKHUB_POLL_INTERVAL_SECONDS).",
        )

    def handle(self, *args, **options) -> None:
        if options["concurrency"] > MAX_CONCURRENCY:
            raise CommandError(f"--concurrency must be at most {MAX_CONCURRENCY}.")
        names = list(dict.fromkeys(options["queue"]))
        unknown = sorted(set(names) - set(QueueConfig.objects.filter(name__in=names).values_list("name", flat=True)))
        if unknown:
            known = ", ".join(QueueConfig.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"Unknown queue(s): {', '.join(unknown)}. Known queues: {known}.")
        worker = Worker(
            queues=names,
            concurrency=options["concurrency"],
            burst=options["burst"],
            max_tasks=options["max_tasks"],
            poll_interval=options["poll_interval"],
        )
        try:
            worker.run()
        except UnsupportedDatabase as exc:
            raise CommandError(str(exc)) from exc
