"""Child processes on a TaskHub database: `python -m bench.child <command> [options]`.

Runs with TaskHub's own settings (the environment names the bench_* database), prints its
result as one JSON line for the orchestrator.
"""

from __future__ import annotations

import argparse
import os
import sys

import django


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.child")
    sub = parser.add_subparsers(dest="command", required=True)
    users = sub.add_parser("users", help="create the bench users (idempotent)")
    users.add_argument("--count", type=int, default=50)
    load = sub.add_parser("load", help="bulk-load task_queue and its counters")
    load.add_argument("--rows", type=int, required=True)
    load.add_argument("--users", type=int, default=50)
    load.add_argument("--days", type=int, default=90)
    load.add_argument("--seed", type=int, default=1)
    live = sub.add_parser("live", help="add live (scheduled or running) tasks to a loaded table (counted)")
    live.add_argument("--rows", type=int, required=True)
    live.add_argument("--users", type=int, default=50)
    pending = sub.add_parser("pending", help="add fresh runnable echo tasks (counted)")
    pending.add_argument("--rows", type=int, required=True)
    enqueue = sub.add_parser("enqueue", help="enqueue echo tasks through TaskHub's services")
    enqueue.add_argument("--mode", choices=("per-task", "bulk"), required=True)
    enqueue.add_argument("--count", type=int, required=True)
    enqueue.add_argument("--chunk", type=int, default=500)
    enqueue.add_argument("--unique", action="store_true", help="per-task: each task with its own unique_key")
    backlog = sub.add_parser("backlog", help="enqueue sleep tasks in bulk")
    backlog.add_argument("--count", type=int, required=True)
    backlog.add_argument("--seconds", type=float, required=True)
    sub.add_parser("schedule", help="replace the schedules with one firing every second")
    lateness = sub.add_parser("lateness", help="pause a schedule and report its fire times' lateness")
    lateness.add_argument("--schedule", type=int, required=True)
    queues = sub.add_parser("latency-queues", help="create the latency section's queues")
    queues.add_argument("--names", required=True, help="comma-separated")
    pickup = sub.add_parser("pickup", help="enqueue echo tasks one `--period` apart; report enqueue → start")
    run_at = sub.add_parser("run-at", help="enqueue echo tasks due one `--period` apart; report lateness")
    for timed in (pickup, run_at):
        timed.add_argument("--count", type=int, required=True)
        timed.add_argument("--queue", required=True)
        timed.add_argument("--start", type=float, required=True, help="time.time() of the first slot")
        timed.add_argument("--period", type=float, required=True)
        timed.add_argument("--offset", type=float, default=0.0, help="this stream's place in each period")
    fair_queue = sub.add_parser("fair-queue", help="set the default queue's fairness mode")
    fair_queue.add_argument("--fairness", choices=("none", "owner"), required=True)
    fair_enqueue = sub.add_parser("fair-enqueue", help="enqueue echo tasks spread over several bench users")
    fair_enqueue.add_argument("--owners", type=int, required=True)
    fair_enqueue.add_argument("--first-user", type=int, default=0)
    fair_enqueue.add_argument("--count", type=int, required=True)
    fair_waits = sub.add_parser("fair-waits", help="wait for tasks to start; report each one's wait")
    fair_waits.add_argument("--first-id", type=int, required=True)
    fair_waits.add_argument("--timeout", type=float, required=True)
    django_tasks = sub.add_parser("enqueue-django", help="enqueue @task no-ops with .enqueue() (TaskHubBackend)")
    django_tasks.add_argument("--count", type=int, required=True)
    failed = sub.add_parser("failed", help="add tasks that failed for good, one failure group (counted)")
    failed.add_argument("--rows", type=int, required=True)
    failed.add_argument("--queue", required=True)
    retry = sub.add_parser("bulk-retry", help="record a bulk retry of a failure group, as staff would in the console")
    retry.add_argument("--group", required=True)
    return parser


def main(argv: list[str]) -> None:
    """Parse the command, set Django up on TaskHub's settings, run it and print its result."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from bench import loader, taskhub_side
    from bench.procs import emit_result

    password = os.environ.get("BENCH_PASSWORD", "")
    if args.command == "users":
        emit_result(loader.ensure_users(args.count, password=password))
    elif args.command == "load":
        owners = loader.ensure_users(args.users, password=password)
        emit_result(loader.load(args.rows, owner_ids=owners["owner_ids"], days=args.days, seed=args.seed))
    elif args.command == "live":
        owners = loader.ensure_users(args.users, password=password)
        emit_result(loader.add_live(args.rows, owner_ids=owners["owner_ids"]))
    elif args.command == "pending":
        emit_result(loader.add_pending(args.rows, username=loader.USER_NAME.format(0)))
    elif args.command == "enqueue":
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.get(username=loader.USER_NAME.format(0))
        if args.mode == "per-task":
            seconds = taskhub_side.enqueue_per_task(user=user, count=args.count, unique=args.unique)
        else:
            seconds = taskhub_side.enqueue_bulk(user=user, count=args.count, chunk=args.chunk)
        emit_result({"count": args.count, "seconds": seconds})
    elif args.command in ("backlog", "schedule"):
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.get(username=loader.USER_NAME.format(0))
        if args.command == "backlog":
            emit_result(
                {
                    "count": args.count,
                    "seconds": taskhub_side.backlog(user=user, count=args.count, seconds=args.seconds),
                }
            )
        else:
            emit_result({"schedule": taskhub_side.schedule_every_second(user=user)})
    elif args.command == "lateness":
        emit_result(taskhub_side.schedule_lateness(schedule_id=args.schedule))
    elif args.command in ("pickup", "run-at"):
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.get(username=loader.USER_NAME.format(0))
        timing = {"count": args.count, "queue": args.queue, "start": args.start, "period": args.period}
        if args.command == "pickup":
            emit_result({"pickup": taskhub_side.pickup(user=user, **timing, offset=args.offset)})
        else:
            emit_result({"lateness": taskhub_side.run_at_lateness(user=user, **timing, offset=args.offset)})
    elif args.command == "latency-queues":
        taskhub_side.latency_queues(names=args.names.split(","))
        emit_result({"queues": args.names.split(",")})
    elif args.command == "fair-queue":
        taskhub_side.fair_queue(fairness=args.fairness)
        emit_result({"fairness": args.fairness})
    elif args.command == "fair-enqueue":
        from django.contrib.auth import get_user_model

        names = [loader.USER_NAME.format(args.first_user + i) for i in range(args.owners)]
        owners = list(get_user_model().objects.filter(username__in=names).order_by("username"))
        emit_result(taskhub_side.fair_enqueue(owners=owners, count=args.count))
    elif args.command == "fair-waits":
        emit_result(taskhub_side.fair_waits(first_id=args.first_id, timeout=args.timeout))
    elif args.command == "enqueue-django":
        emit_result({"count": args.count, "seconds": taskhub_side.enqueue_django(count=args.count)})
    elif args.command == "failed":
        emit_result(loader.add_failed(args.rows, username=loader.USER_NAME.format(0), queue_name=args.queue))
    elif args.command == "bulk-retry":
        from django.contrib.auth import get_user_model

        from tasks.bulk import bulk_action_create

        staff = get_user_model().objects.get(username=loader.STAFF_NAME)
        action = bulk_action_create(action="retry", filters={"failure_group": args.group}, params={}, by=staff)
        emit_result({"action": action.pk})


if __name__ == "__main__":
    main(sys.argv[1:])
