"""What callers ask of tasks and queues (REST, admin, console, commands): policy, then a transition.

The policy lives here (validation, idempotency keys, per-user quotas, who may do what); every
change of a task's state is a function of `tasks.transitions`, which keeps the statistics in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from core import shortcuts
from core.db.errors import is_retryable_contention
from tasks import queue_cache, transitions
from tasks.errors import QuotaExceeded, TaskSpecInvalid, TaskStateConflict
from tasks.models import ACTIVE_STATUSES, DEFAULT_QUEUE_NAME, QueueConfig, TaskKind, TaskQueue, TaskStatus
from tasks.specs import TaskSpec, check_spec
from tasks.transitions import CancelOutcome

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.db.models import QuerySet

# A race on an idempotency key or a deadlock is resolved by running the whole enqueue again.
ENQUEUE_ATTEMPTS = 3
IDEMPOTENCY_CONSTRAINT = "task_owner_idempotency_uniq"
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
    """Enqueue one task; with a known idempotency key return the existing task instead.

    1. Check the spec against the queue (from the per-process cache: no round trip).
    2. A queue with a per-user quota takes the locked path of `tasks_enqueue_bulk`.
    3. Otherwise one INSERT, in autocommit (or the caller's transaction). With an idempotency key
       the INSERT comes first: the unique constraint's error means the key exists (or a concurrent
       request just used it), and the existing task is returned.
    """
    spec = TaskSpec(
        task_type=task_type,
        payload={} if payload is None else payload,
        queue=queue,
        priority=priority,
        run_at=run_at,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
    )
    return _enqueue_one(user=user, spec=spec)


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
    return _enqueue_one(user=user, spec=spec).task


def _enqueue_one(*, user: AbstractBaseUser, spec: TaskSpec) -> EnqueueResult:
    """Enqueue one task: one INSERT unless a quota needs the locked path (see `task_enqueue`)."""
    for attempt in (1, 2):
        queues = _queues_named({spec.queue} if isinstance(spec.queue, str) else set())
        checked = check_spec(spec, queues)
        target = queues[checked.queue]
        if target.max_active_per_user is not None:
            result = tasks_enqueue_bulk(user=user, specs=[checked], queues=queues)
            return EnqueueResult(task=result.tasks[0], created=bool(result.created))
        task = _new_task(user, checked, target, timezone.now())
        # Inside a caller's transaction, an INSERT expected to fail on an idempotency key gets a
        # savepoint so that failing does not abort the caller's transaction.
        savepoint = connection.in_atomic_block and checked.idempotency_key is not None
        try:
            with transaction.atomic() if savepoint else nullcontext():
                transitions.enqueue([task])
        except IntegrityError as exc:
            conflict = checked.idempotency_key is not None and _is_idempotency_conflict(exc)
            if conflict:
                existing = _existing_by_key(user=user, keys={checked.idempotency_key})
                if checked.idempotency_key in existing:
                    return EnqueueResult(task=existing[checked.idempotency_key], created=False)
            if attempt == 2 or (connection.in_atomic_block and not savepoint):
                raise
            if not conflict:
                queue_cache.forget()  # the cached queue may have been deleted meanwhile: look again
            continue
        return EnqueueResult(task=task, created=True)
    raise AssertionError("unreachable")


def tasks_enqueue_bulk(
    *, user: AbstractBaseUser, specs: Sequence[TaskSpec], queues: dict[str, QueueConfig] | None = None
) -> BulkEnqueueResult:
    """Enqueue many tasks at once, all or none: one multi-row INSERT per batch.

    1. Check every spec (raises TaskSpecInvalid / PayloadTooLarge naming the first bad one).
    2. In one transaction: find tasks whose idempotency keys already exist, enforce per-user
       queue quotas (raises QuotaExceeded), insert the rest.
    3. A concurrent insert of the same idempotency key makes the unique constraint fail; the
       transaction is rolled back and step 2 runs again, now finding the winner's task.
    """
    if not specs:
        return BulkEnqueueResult(tasks=[], created=0)
    if queues is None:
        queues = _queues_named({s.queue for s in specs if isinstance(s.queue, str)})
    specs = [check_spec(spec, queues, index=i if len(specs) > 1 else None) for i, spec in enumerate(specs)]
    retry_allowed = not connection.in_atomic_block  # a deadlock aborts the caller's whole transaction
    for attempt in range(1, ENQUEUE_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return _insert_specs(user=user, specs=specs, queues=queues)
        except IntegrityError as exc:
            if not any(s.idempotency_key for s in specs) or not _is_idempotency_conflict(exc):
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


def _new_task(user: AbstractBaseUser, spec: TaskSpec, queue: QueueConfig, now: datetime) -> TaskQueue:
    return TaskQueue(
        owner=user,
        queue=queue,
        task_type=spec.task_type,
        payload=spec.payload,
        priority=spec.priority,
        # A time in the past means "now": a task becomes runnable when it is created, no earlier, so
        # its wait (health, metrics, queue status) and its place in the claim order (run_at) start then.
        run_at=max(spec.run_at, now) if spec.run_at else now,
        max_attempts=spec.max_attempts or queue.max_attempts,
        idempotency_key=spec.idempotency_key,
        kind=spec.kind,
        timeout_seconds=spec.timeout_seconds,
        created_at=now,
    )


def _is_idempotency_conflict(exc: IntegrityError) -> bool:
    """Return True when `exc` is the (owner, idempotency_key) unique constraint, not another integrity error."""
    text = str(exc)
    # MySQL/MariaDB name the key; SQLite names the columns.
    return IDEMPOTENCY_CONSTRAINT in text or "task_queue.owner_id, task_queue.idempotency_key" in text


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
        task = _new_task(user, spec, queues[spec.queue], now)
        new.append(task)
        if spec.idempotency_key is not None:
            by_key[spec.idempotency_key] = task
    _check_quotas(user=user, tasks=new)
    transitions.enqueue(new)
    created = iter(new)
    tasks = [by_key[s.idempotency_key] if s.idempotency_key is not None else next(created) for s in specs]
    return BulkEnqueueResult(tasks=tasks, created=len(new))


# What enqueueing reads of a queue.
ENQUEUE_QUEUE_FIELDS = ("id", "name", "max_attempts", "max_active_per_user")


def _queues_named(names: set[str]) -> dict[str, QueueConfig]:
    """Return the queues with these names, with just what enqueueing reads, from the per-process cache."""
    if not names:
        return {}
    return queue_cache.queues_named(names, _load_queues)


def _load_queues(names: set[str]) -> dict[str, QueueConfig]:
    """Read the queues with these names, with just what enqueueing reads (the rest loads on access)."""
    fast_sql = _fast_sql()
    if fast_sql is not None:
        return fast_sql.queues_named(names, ENQUEUE_QUEUE_FIELDS)
    queues = QueueConfig.objects.only(*ENQUEUE_QUEUE_FIELDS).filter(name__in=names)
    return {queue.name: queue for queue in queues}


@shortcuts.chosen
def _fast_sql() -> ModuleType | None:
    """The `raw_task_sql` shortcut (`tasks.fast_sql`: one plain SELECT instead of the ORM's), or None."""
    if shortcuts.enabled("raw_task_sql"):
        from tasks import fast_sql

        return fast_sql
    return None


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
    queue_cache.forget()
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
