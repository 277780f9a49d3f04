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
from tasks import queue_cache, transitions, wakeups
from tasks.errors import QuotaExceeded, TaskSpecInvalid, TaskStateConflict
from tasks.models import (
    ACTIVE_STATUSES,
    DEFAULT_QUEUE_NAME,
    OwnerQueueSettings,
    QueueConfig,
    TaskKind,
    TaskQueue,
    TaskStatus,
)
from tasks.specs import ON_CONFLICT_RETURN, TaskSpec, check_spec
from tasks.transitions import CancelOutcome

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.db.models import QuerySet

# A race on an idempotency key or a deadlock is resolved by running the whole enqueue again.
ENQUEUE_ATTEMPTS = 3
# A unique key's holder may finish (or be claimed) between the failed INSERT and the look-up:
# each such round goes again, a few times at most.
UNIQUE_KEY_ATTEMPTS = 5
IDEMPOTENCY_CONSTRAINT = "task_owner_idempotency_uniq"
UNIQUE_KEY_CONSTRAINT = "task_active_unique_key_uniq"
QUEUE_EDITABLE_FIELDS = (
    "description",
    "is_paused",
    "max_concurrency",
    "max_attempts",
    "retry_backoff_seconds",
    "retry_backoff_max_seconds",
    "task_timeout_seconds",
    "max_active_per_user",
    "fairness",
    "per_key_concurrency",
    "rate_limit",
    "rate_limit_per_key",
)


@dataclass(frozen=True)
class EnqueueResult:
    task: TaskQueue
    created: bool
    # An existing task was answered: its unique key's active holder (updated in place by
    # `on_conflict=replace`), or the task of an idempotency key.
    deduplicated: bool = False


@dataclass(frozen=True)
class BulkEnqueueResult:
    tasks: list[TaskQueue]  # in the order of the specs; a repeated idempotency key repeats its task
    created: int
    deduplicated: frozenset[int] = frozenset()  # ids of the tasks that existed before this call


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
    unique_key: str | None = None,
    on_conflict: str = ON_CONFLICT_RETURN,
    concurrency_key: str | None = None,
) -> EnqueueResult:
    """Enqueue one task; with a known idempotency key, or a unique key held by an active task, answer that task.

    1. Check the spec against the queue (from the per-process cache: no round trip).
    2. A queue with a per-user quota takes the locked path of `tasks_enqueue_bulk`.
    3. Otherwise one INSERT, in autocommit (or the caller's transaction). With an idempotency or
       unique key the INSERT comes first: the unique constraint's error means the key is taken
       (perhaps by a concurrent request a moment ago), and the task holding it is answered — or,
       with `on_conflict="replace"`, updated in place while pending, superseded once running.
    """
    spec = TaskSpec(
        task_type=task_type,
        payload={} if payload is None else payload,
        queue=queue,
        priority=priority,
        run_at=run_at,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
        unique_key=unique_key,
        on_conflict=on_conflict,
        concurrency_key=concurrency_key,
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
    unique_key: str | None = None,
    on_conflict: str = ON_CONFLICT_RETURN,
    concurrency_key: str | None = None,
) -> EnqueueResult:
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
        unique_key=unique_key,
        on_conflict=on_conflict,
        concurrency_key=concurrency_key,
    )
    return _enqueue_one(user=user, spec=spec)


def _enqueue_one(*, user: AbstractBaseUser, spec: TaskSpec) -> EnqueueResult:
    """Enqueue one task: one INSERT unless a quota needs the locked path (see `task_enqueue`)."""
    attempts = UNIQUE_KEY_ATTEMPTS if spec.unique_key is not None else 2
    for attempt in range(1, attempts + 1):
        queues = _queues_named({spec.queue} if isinstance(spec.queue, str) else set())
        checked = check_spec(spec, queues)
        target = queues[checked.queue]
        if target.max_active_per_user is not None:
            result = tasks_enqueue_bulk(user=user, specs=[checked], queues=queues)
            task = result.tasks[0]
            return EnqueueResult(task=task, created=bool(result.created), deduplicated=task.pk in result.deduplicated)
        task = _new_task(user, checked, target, timezone.now())
        # Inside a caller's transaction, an INSERT expected to fail on an idempotency or unique key
        # gets a savepoint so that failing does not abort the caller's transaction.
        keyed = checked.idempotency_key is not None or checked.unique_key is not None
        savepoint = connection.in_atomic_block and keyed
        try:
            with transaction.atomic() if savepoint else nullcontext():
                transitions.enqueue([task])
        except IntegrityError as exc:
            conflict = checked.idempotency_key is not None and _is_idempotency_conflict(exc)
            if conflict:
                existing = _existing_by_key(user=user, keys={checked.idempotency_key})
                if checked.idempotency_key in existing:
                    return EnqueueResult(task=existing[checked.idempotency_key], created=False, deduplicated=True)
            elif checked.unique_key is not None and _is_unique_key_conflict(exc):
                conflict = True
                resolved = _resolve_unique_key(user, checked, target)
                if resolved is not None:
                    return resolved
            if attempt == attempts or (connection.in_atomic_block and not savepoint):
                raise
            if not conflict:
                queue_cache.forget()  # the cached queue may have been deleted meanwhile: look again
            continue
        return EnqueueResult(task=task, created=True)
    raise AssertionError("unreachable")


def _resolve_unique_key(user: AbstractBaseUser, spec: TaskSpec, queue: QueueConfig) -> EnqueueResult | None:
    """Answer an enqueue whose unique key an active task holds; None when that task let go of it meanwhile.

    `return`: the holder. `replace`: the holder updated in place while pending; once it runs, a
    new task that takes the key over (the running one carries on without it).
    """
    holder = _active_holders(user=user, keys={(queue.pk, spec.unique_key)}).get((queue.pk, spec.unique_key))
    if holder is None:
        return None
    if spec.on_conflict == ON_CONFLICT_RETURN:
        return EnqueueResult(task=holder, created=False, deduplicated=True)
    if holder.status == TaskStatus.PENDING:
        run_at = spec.run_at or timezone.now()
        if transitions.replace_pending(holder, payload=spec.payload, run_at=run_at, priority=spec.priority):
            return EnqueueResult(task=holder, created=False, deduplicated=True)
        return None
    new = _new_task(user, spec, queue, timezone.now())
    try:
        if transitions.supersede_and_enqueue(holder, new):
            return EnqueueResult(task=new, created=True)
    except IntegrityError as exc:
        if not _is_unique_key_conflict(exc):
            raise
    return None


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
            if any(s.unique_key for s in specs) and _is_unique_key_conflict(exc) and attempt < ENQUEUE_ATTEMPTS:
                continue  # a concurrent enqueue took a key first: look again, now finding it
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


def _new_task(user: AbstractBaseUser | None, spec: TaskSpec, queue: QueueConfig, now: datetime) -> TaskQueue:
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
        unique_key=spec.unique_key,
        concurrency_key=spec.concurrency_key,
        schedule_id=spec.schedule_id,
        created_at=now,
    )


def _is_unique_key_conflict(exc: IntegrityError) -> bool:
    """Return True when `exc` is the (owner, queue, active unique key) constraint."""
    text = str(exc)
    return UNIQUE_KEY_CONSTRAINT in text or "task_queue.active_unique_key" in text


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
    unique = {(queues[s.queue].pk, s.unique_key) for s in specs if s.unique_key is not None}
    holders = _active_holders(user=user, keys=unique)
    existed = {task.pk for task in (*by_key.values(), *holders.values())}
    now = timezone.now()
    new: list[TaskQueue] = []
    answers: list[TaskQueue] = []
    superseding: list[tuple[TaskQueue, TaskQueue]] = []  # (running holder, the new task that takes its key)
    for spec in specs:
        if spec.idempotency_key is not None and spec.idempotency_key in by_key:
            answers.append(by_key[spec.idempotency_key])
            continue
        slot = (queues[spec.queue].pk, spec.unique_key)
        holder = holders.get(slot) if spec.unique_key is not None else None
        task = _new_task(user, spec, queues[spec.queue], now)
        if holder is not None and spec.on_conflict == ON_CONFLICT_RETURN:
            task = holder
        elif holder is not None and holder.status == TaskStatus.PENDING:
            task = holder
            run_at = spec.run_at or now
            if holder.pk is None:  # a task of this very request: not written yet
                holder.payload, holder.run_at, holder.priority = spec.payload, run_at, spec.priority
            elif not transitions.replace_pending(holder, payload=spec.payload, run_at=run_at, priority=spec.priority):
                raise IntegrityError(f"{UNIQUE_KEY_CONSTRAINT}: its holder was claimed meanwhile")
        elif holder is not None:
            superseding.append((holder, task))  # written after the quota check: the holder stays active
        else:
            new.append(task)
        if spec.unique_key is not None:
            holders[slot] = task
        if spec.idempotency_key is not None:
            by_key[spec.idempotency_key] = task
        answers.append(task)
    # A task superseding a running holder adds one active task to the owner's count, as a new one does.
    _check_quotas(user_id=user.pk, tasks=[*new, *(task for _, task in superseding)])
    for holder, task in superseding:
        if not transitions.supersede_and_enqueue(holder, task):
            raise IntegrityError(f"{UNIQUE_KEY_CONSTRAINT}: its holder finished meanwhile")
    transitions.enqueue(new)
    return BulkEnqueueResult(tasks=answers, created=len(new) + len(superseding), deduplicated=frozenset(existed))


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


def _active_holders(*, user: AbstractBaseUser, keys: set[tuple[int, str]]) -> dict[tuple[int, str], TaskQueue]:
    """Return `user`'s active tasks holding these (queue id, unique key)s, as the database compares keys.

    Served by task_active_unique_key_uniq (owner, queue, active_unique_key). A row found for no
    exact key (MySQL's collation: "Key" = "key") is matched one query at a time, as idempotency keys are.
    """
    if not keys:
        return {}
    rows = list(
        TaskQueue.objects.filter(
            owner=user,
            queue_id__in={queue_id for queue_id, _ in keys},
            active_unique_key__in={key for _, key in keys},
        )
    )
    found = {(task.queue_id, task.unique_key): task for task in rows if (task.queue_id, task.unique_key) in keys}
    if len(found) < len(rows):
        for queue_id, key in sorted(keys - found.keys()):
            task = TaskQueue.objects.filter(owner=user, queue_id=queue_id, active_unique_key=key).first()
            if task is not None:
                found[(queue_id, key)] = task
    return found


def quota_check(task: TaskQueue) -> None:
    """Refuse (QuotaExceeded) a task its owner's quota in its queue has no room for; inside a transaction."""
    _check_quotas(user_id=task.owner_id, tasks=[task])


def task_build(*, user_id: int, spec: TaskSpec) -> TaskQueue:
    """Return an unsaved task of `spec` owned by user `user_id`, checked as an enqueue checks it (schedules use it)."""
    queues = _queues_named({spec.queue} if isinstance(spec.queue, str) else set())
    checked = check_spec(spec, queues)
    task = _new_task(None, checked, queues[checked.queue], timezone.now())
    task.owner_id = user_id
    if checked.run_at is not None:
        # A schedule's task runs at the fire time it was created for, even a moment past (issue #15).
        task.run_at = checked.run_at
    return task


def _check_quotas(*, user_id: int, tasks: list[TaskQueue]) -> None:
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
    list(get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk", flat=True))
    active = dict(
        TaskQueue.objects.filter(owner_id=user_id, status__in=ACTIVE_STATUSES, queue_id__in=limited)
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
    """Put a failed or cancelled task back to pending with its attempts reset; 409 otherwise.

    Also 409 when another active task of the owner's holds its unique key in the queue now.
    """
    try:
        reopened = transitions.reopen(task)
    except IntegrityError as exc:
        if not _is_unique_key_conflict(exc):
            raise
        raise TaskStateConflict(
            _("task %(id)s cannot be retried: another active task holds its unique key %(key)s")
            % {"id": task.pk, "key": repr(task.unique_key)},
            status=task.status,
        ) from exc
    if not reopened:
        raise TaskStateConflict(
            _("task %(id)s is %(status)s; only failed or cancelled tasks can be retried")
            % {"id": task.pk, "status": task.status},
            status=task.status,
        )
    return task


def queue_set_paused(*, queue: QueueConfig, paused: bool) -> QueueConfig:
    """Pause or resume a queue; workers stop or resume claiming from it (woken at once on resume)."""
    QueueConfig.objects.filter(pk=queue.pk).update(is_paused=paused, updated_at=timezone.now())
    queue_cache.forget()
    if not paused:
        wakeups.notify([queue.name])
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


def owner_queue_settings_update(*, user: AbstractBaseUser, fair_weight: int) -> OwnerQueueSettings:
    """Set a user's fair weight with the admin's validation; raise ValidationError if invalid."""
    with transaction.atomic():
        found = OwnerQueueSettings.objects.select_for_update().filter(user_id=user.pk).first()
        settings_row = found or OwnerQueueSettings(user_id=user.pk)
        settings_row.fair_weight = fair_weight
        settings_row.full_clean(validate_unique=False)
        settings_row.save()
    return settings_row


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
