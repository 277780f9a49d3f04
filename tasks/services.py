"""What callers ask of tasks and queues (REST, admin, console, commands): policy, then a transition.

The policy lives here (validation, idempotency keys, per-user quotas, who may do what); every
change of a task's state is a function of `tasks.transitions`, which keeps the statistics in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from core.db.errors import is_retryable_contention
from tasks import transitions
from tasks.exceptions import TaskStateConflict
from tasks.models import ACTIVE_STATUSES, DEFAULT_QUEUE_NAME, QueueConfig, TaskKind, TaskQueue, TaskStatus
from tasks.specs import TaskSpec, TaskSpecInvalid, check_spec
from tasks.transitions import CancelOutcome

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.db.models import QuerySet

# A race on an idempotency key or a deadlock is resolved by running the whole enqueue again.
ENQUEUE_ATTEMPTS = 3
QUEUE_EDITABLE_FIELDS = (
    "description",
    "is_paused",
    "max_concurrency",
    "max_attempts",
    "retry_backoff_seconds",
    "retry_backoff_max_seconds",
    "task_timeout_seconds",
    "max_active_per_user",
)


class QuotaExceeded(Exception):
    """Enqueueing would take a user past a queue's `max_active_per_user`."""

    def __init__(self, *, queue: QueueConfig, active: int, requested: int) -> None:
        self.queue, self.active, self.requested = queue, active, requested
        super().__init__(
            _(
                "queue %(queue)s allows %(limit)d active tasks per user; you have %(active)d and asked for %(requested)d more"
            )
            % {"queue": repr(queue.name), "limit": queue.max_active_per_user, "active": active, "requested": requested}
        )


@dataclass(frozen=True)
class EnqueueResult:
    task: TaskQueue
    created: bool


@dataclass(frozen=True)
class BulkEnqueueResult:
    tasks: list[TaskQueue]  # in the order of the specs; a repeated idempotency key repeats its task
    created: int


def task_enqueue(
    *,
    user: AbstractBaseUser,
    task_type: str,
    payload: dict[str, Any] | None = None,
    queue: str = DEFAULT_QUEUE_NAME,
    priority: int = 0,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
) -> EnqueueResult:
    """Enqueue one task; with a known idempotency key return the existing task instead."""
    spec = TaskSpec(
        task_type=task_type,
        payload={} if payload is None else payload,
        queue=queue,
        priority=priority,
        run_at=run_at,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
    )
    result = tasks_enqueue_bulk(user=user, specs=[spec])
    return EnqueueResult(task=result.tasks[0], created=bool(result.created))


def task_enqueue_django(
    *,
    user: AbstractBaseUser,
    task_path: str,
    args: list[Any],
    kwargs: dict[str, Any],
    queue: str = DEFAULT_QUEUE_NAME,
    priority: int = 0,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
) -> TaskQueue:
    """Enqueue one Django task (`tasks.backends`), already validated by its backend, as `user`.

    `task_path` is the task's dotted path, stored as its `task_type`: the worker imports it and
    runs it only if it names a `Task`. The REST API never reaches this (registry handlers only).
    Inside the caller's transaction the row commits (or rolls back) with it.
    """
    spec = TaskSpec(
        task_type=task_path,
        payload={"args": args, "kwargs": kwargs},
        queue=queue,
        priority=priority,
        run_at=run_at,
        max_attempts=max_attempts,
        kind=TaskKind.DJANGO,
        timeout_seconds=timeout_seconds,
    )
    return tasks_enqueue_bulk(user=user, specs=[spec]).tasks[0]


def tasks_enqueue_bulk(*, user: AbstractBaseUser, specs: Sequence[TaskSpec]) -> BulkEnqueueResult:
    """Enqueue many tasks at once, all or none: one multi-row INSERT per batch, counters once.

    1. Check every spec (raises TaskSpecInvalid / PayloadTooLarge naming the first bad one).
    2. In one transaction: find tasks whose idempotency keys already exist, enforce per-user
       queue quotas (raises QuotaExceeded), insert the rest and count them.
    3. A concurrent insert of the same idempotency key makes the unique constraint fail; the
       transaction is rolled back and step 2 runs again, now finding the winner's task.
    """
    if not specs:
        return BulkEnqueueResult(tasks=[], created=0)
    queues = _queues_named({s.queue for s in specs if isinstance(s.queue, str)})
    specs = [check_spec(spec, queues, index=i if len(specs) > 1 else None) for i, spec in enumerate(specs)]
    retry_allowed = not connection.in_atomic_block  # a deadlock aborts the caller's whole transaction
    for attempt in range(1, ENQUEUE_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return _insert_specs(user=user, specs=specs, queues=queues)
        except IntegrityError as exc:
            if not any(s.idempotency_key for s in specs):
                raise
            if attempt == ENQUEUE_ATTEMPTS:
                # Not a race (the winner would have been found): two keys of this very request
                # that the database's collation deems equal (MySQL: "Key" = "key").
                raise TaskSpecInvalid(
                    {"idempotency_key": _("Two tasks of this request have the same key (compared case-insensitively).")}
                ) from exc
        except Exception as exc:
            if attempt == ENQUEUE_ATTEMPTS or not retry_allowed or not is_retryable_contention(exc):
                raise
    raise AssertionError("unreachable")


def _insert_specs(
    *, user: AbstractBaseUser, specs: list[TaskSpec], queues: dict[str, QueueConfig]
) -> BulkEnqueueResult:
    keys = {s.idempotency_key for s in specs if s.idempotency_key is not None}
    by_key = _existing_by_key(user=user, keys=keys)
    now = timezone.now()
    new: list[TaskQueue] = []
    for spec in specs:
        if spec.idempotency_key is not None and spec.idempotency_key in by_key:
            continue
        queue = queues[spec.queue]
        task = TaskQueue(
            owner=user,
            queue=queue,
            task_type=spec.task_type,
            payload=spec.payload,
            priority=spec.priority,
            run_at=spec.run_at or now,
            max_attempts=spec.max_attempts or queue.max_attempts,
            idempotency_key=spec.idempotency_key,
            kind=spec.kind,
            timeout_seconds=spec.timeout_seconds,
            created_at=now,
        )
        new.append(task)
        if spec.idempotency_key is not None:
            by_key[spec.idempotency_key] = task
    _check_quotas(user=user, tasks=new)
    transitions.enqueue(new)
    created = iter(new)
    tasks = [by_key[s.idempotency_key] if s.idempotency_key is not None else next(created) for s in specs]
    return BulkEnqueueResult(tasks=tasks, created=len(new))


def _queues_named(names: set[str]) -> dict[str, QueueConfig]:
    """Return the queues with these names, with just what enqueueing reads (the rest loads on access).

    One plain SELECT: the ORM's query would cost the per-task enqueue more Python than its INSERT.
    """
    if not names:
        return {}
    fields = ("id", "name", "max_attempts", "max_active_per_user")
    marks = ", ".join(["%s"] * len(names))
    with connection.cursor() as cursor:
        table = QueueConfig._meta.db_table
        cursor.execute(f"SELECT {', '.join(fields)} FROM {table} WHERE name IN ({marks})", sorted(names))
        rows = cursor.fetchall()
    queues = (QueueConfig.from_db(connection.alias, fields, row) for row in rows)
    return {queue.name: queue for queue in queues}


def _existing_by_key(*, user: AbstractBaseUser, keys: set[str]) -> dict[str, TaskQueue]:
    """Return `user`'s tasks with these idempotency keys, as the database compares keys.

    MySQL's collation equates keys Python tells apart ("Key" = "key", "é" = "e", trailing
    spaces): a row found for no exact key is matched to its key one query at a time (rare).
    """
    if not keys:
        return {}
    found = list(TaskQueue.objects.filter(owner=user, idempotency_key__in=keys))
    by_key = {task.idempotency_key: task for task in found if task.idempotency_key in keys}
    if len(by_key) < len(found):
        for key in sorted(keys - by_key.keys()):
            task = TaskQueue.objects.filter(owner=user, idempotency_key=key).first()
            if task is not None:
                by_key[key] = task
    return by_key


def _check_quotas(*, user: AbstractBaseUser, tasks: list[TaskQueue]) -> None:
    """Refuse tasks that would exceed a queue's per-user active limit.

    The user's row is locked first, so two enqueues by one user into limited queues count one
    after the other (no lost update); other users and the workers are not held up.
    """
    requested: dict[int, int] = {}
    limited = {}
    for task in tasks:
        if task.queue.max_active_per_user is not None:
            limited[task.queue_id] = task.queue
            requested[task.queue_id] = requested.get(task.queue_id, 0) + 1
    if not limited:
        return
    list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True))
    active = dict(
        TaskQueue.objects.filter(owner=user, status__in=ACTIVE_STATUSES, queue_id__in=limited)
        .values_list("queue_id")
        .annotate(n=models.Count("id"))
        .order_by()
    )
    for queue_id, queue in sorted(limited.items()):
        if active.get(queue_id, 0) + requested[queue_id] > queue.max_active_per_user:
            raise QuotaExceeded(queue=queue, active=active.get(queue_id, 0), requested=requested[queue_id])


def task_cancel(*, task: TaskQueue, by: AbstractBaseUser | None = None) -> CancelOutcome:
    """Cancel a pending task at once, or ask a running task's handler to stop; 409 if finished."""
    outcome = transitions.cancel(task)
    if outcome is None:
        raise TaskStateConflict(
            _("task %(id)s is %(status)s and cannot be cancelled") % {"id": task.pk, "status": task.status},
            status=task.status,
        )
    return outcome


def task_retry(*, task: TaskQueue, by: AbstractBaseUser | None = None) -> TaskQueue:
    """Put a failed or cancelled task back to pending with its attempts reset; 409 otherwise."""
    if not transitions.reopen(task):
        raise TaskStateConflict(
            _("task %(id)s is %(status)s; only failed or cancelled tasks can be retried")
            % {"id": task.pk, "status": task.status},
            status=task.status,
        )
    return task


def queue_set_paused(*, queue: QueueConfig, paused: bool) -> QueueConfig:
    """Pause or resume a queue; workers stop or resume claiming from it."""
    QueueConfig.objects.filter(pk=queue.pk).update(is_paused=paused, updated_at=timezone.now())
    queue.refresh_from_db()
    return queue


def tasks_delete(*, queryset: QuerySet[TaskQueue]) -> int:
    """Delete tasks and uncount the finished ones; return how many were deleted."""
    return transitions.delete(queryset)


def queue_update(*, queue: QueueConfig, changes: dict[str, Any]) -> QueueConfig:
    """Change a queue's settings with the admin's validation; raise ValidationError if invalid."""
    unknown = set(changes) - set(QUEUE_EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        locked = QueueConfig.objects.select_for_update().get(pk=queue.pk)
        for name, value in changes.items():
            setattr(locked, name, value)
        locked.full_clean(validate_unique=False)
        locked.save(update_fields=[*changes, "updated_at"])
    return locked


def tasks_retry_failed(*, task_type: str, since: datetime, limit: int, by: AbstractBaseUser | None = None) -> int:
    """Retry the newest `limit` failed tasks of `task_type` created since `since`; return how many were retried."""
    ids = list(
        TaskQueue.objects.filter(status=TaskStatus.FAILED, task_type=task_type, created_at__gte=since)
        .order_by("-id")
        .values_list("id", flat=True)[:limit]
    )
    retried = 0
    for task in TaskQueue.objects.filter(pk__in=ids).order_by("id"):
        try:
            task_retry(task=task, by=by)
        except TaskStateConflict:
            continue  # retried (or finished otherwise) by someone else meanwhile
        retried += 1
    return retried
