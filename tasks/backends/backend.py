"""TaskHubBackend: Django's task backend API on TaskHub's table, workers and admin.

Importable before the app registry is ready (a `@task` in a module Django loads early creates
the backend): the models and services are imported where they are used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core import checks
from django.db import DatabaseError, connection, transaction
from django.utils.module_loading import import_string

from core.db.features import skip_locked_problem
from tasks.backends import owner
from tasks.backends.compat import (
    BaseTaskBackend,
    InvalidTask,
    InvalidTaskBackend,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)
from tasks.backends.task import TaskHubTask, check_arguments

# tasks.models' bounds, repeated so this module imports no model (test_backends checks they agree).
MAX_ATTEMPTS_LIMIT = 100
TASK_TIMEOUT_MAX_SECONDS = 7 * 24 * 3600
OPTION_NAMES = {"OWNER", "MAX_ATTEMPTS", "BACKOFF", "TIMEOUT", "ENQUEUE_ON_COMMIT"}


class TaskHubBackend(BaseTaskBackend):
    """Run Django tasks on TaskHub: one `task_queue` row per enqueue, run by `run_worker`.

    OPTIONS: `OWNER` (username of the system user that owns tasks enqueued with no user, created
    by migrate; default "taskhub-system"), `MAX_ATTEMPTS`, `BACKOFF` (a callable or its dotted
    path) and `TIMEOUT` (seconds), the defaults of tasks that set none (then the queue's), and
    `ENQUEUE_ON_COMMIT` (default False: inside `transaction.atomic()` the row is written in the
    caller's transaction and commits or rolls back with it; True: it is written once that
    transaction commits, and the TaskResult gets its id then).
    """

    task_class = TaskHubTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True  # Django's -100..100, higher first: TaskHub's own scale, as is

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = set(self.options) - OPTION_NAMES
        if unknown:
            raise InvalidTaskBackend(f"{alias}: unknown OPTIONS {sorted(unknown)}; known: {sorted(OPTION_NAMES)}")
        self.owner_username = self.options.get("OWNER", owner.DEFAULT_OWNER)
        if not isinstance(self.owner_username, str) or not self.owner_username:
            raise InvalidTaskBackend(f"{alias}: OPTIONS['OWNER'] must be a username")
        self.max_attempts = self.options.get("MAX_ATTEMPTS")
        self.timeout = self.options.get("TIMEOUT")
        self.enqueue_on_commit = bool(self.options.get("ENQUEUE_ON_COMMIT", False))
        problem = _policy_problem(self.max_attempts, self.timeout)
        if problem:
            raise InvalidTaskBackend(f"{alias}: OPTIONS: {problem}")
        backoff = self.options.get("BACKOFF")
        try:
            self.backoff = import_string(backoff) if isinstance(backoff, str) else backoff
        except ImportError as exc:
            raise InvalidTaskBackend(f"{alias}: OPTIONS['BACKOFF']: {exc}") from exc
        if self.backoff is not None and not callable(self.backoff):
            raise InvalidTaskBackend(f"{alias}: OPTIONS['BACKOFF'] must be a callable or its dotted path")

    def validate_task(self, task: Task) -> None:
        """Apply Django's rules, then TaskHub's to the per-task policy."""
        super().validate_task(task)
        if isinstance(task, TaskHubTask):
            problem = _policy_problem(task.max_attempts, task.timeout)
            if problem:
                raise InvalidTask(problem)
            if task.backoff is not None and not callable(task.backoff):
                raise InvalidTask("backoff must be a callable: backoff(exception, task_result) -> seconds | None")

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Insert the task's row (in the caller's transaction, if any) and return its TaskResult."""
        self.validate_task(task)
        args, kwargs = check_arguments(args, kwargs)
        if self.enqueue_on_commit and connection.in_atomic_block:
            return self._enqueue_on_commit(task, args, kwargs)
        return self._insert(task, args, kwargs)

    def get_result(self, result_id: str) -> TaskResult:
        """Return the TaskResult of a Django task by id; TaskResultDoesNotExist if there is none."""
        from tasks.backends.results import task_result
        from tasks.models import TaskKind, TaskQueue

        try:
            pk = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        row = TaskQueue.objects.select_related("queue").filter(pk=pk, kind=TaskKind.DJANGO).first()
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        return task_result(row, alias=self.alias, queue_name=row.queue.name)

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        """Report queues in QUEUES missing from queue_config and a database without SKIP LOCKED.

        Database checks, so they run when the check run is given databases (`check --database
        default`, `migrate`), as Django's own database checks do.
        """
        from tasks.models import QueueConfig

        yield from super().check(**kwargs)
        if not kwargs.get("databases"):
            return
        problem = skip_locked_problem(
            vendor=connection.vendor,
            is_mariadb=getattr(connection, "mysql_is_mariadb", False),
            version=tuple(getattr(connection, "mysql_version", ())) if connection.vendor == "mysql" else (),
        )
        if problem:
            yield checks.Error(problem, id="tasks.E101", obj=f"TASKS[{self.alias!r}]")
        if not self.queues:
            return
        try:
            known = set(QueueConfig.objects.filter(name__in=self.queues).values_list("name", flat=True))
        except DatabaseError:
            return  # not migrated yet: migrate creates queue_config (and the default queue)
        for name in sorted(self.queues - known):
            yield checks.Error(
                f"TASKS[{self.alias!r}]['QUEUES'] names the queue {name!r}, which is not in queue_config.",
                hint="Create it in the admin (Queues) or PATCH /api/queues/, or take it out of QUEUES.",
                id="tasks.E102",
                obj=f"TASKS[{self.alias!r}]",
            )

    # --- Enqueueing ----------------------------------------------------------------------------

    def _insert(self, task: Task, args: list[Any], kwargs: dict[str, Any]) -> TaskResult:
        from tasks import services
        from tasks.backends.results import build_result, task_result
        from tasks.specs import PayloadTooLarge, TaskSpecInvalid

        max_attempts, timeout = _policy(task, self)
        try:
            enqueued = services.task_enqueue_django(
                user=owner.current_owner(self.owner_username),
                task_path=task.module_path,
                args=args,
                kwargs=kwargs,
                queue=task.queue_name,
                priority=task.priority,
                run_at=task.run_after,
                max_attempts=max_attempts,
                timeout_seconds=timeout,
                unique_key=getattr(task, "unique_key", None),
                on_conflict=getattr(task, "on_conflict", "return"),
                concurrency_key=getattr(task, "concurrency_key", None),
            )
        except (TaskSpecInvalid, PayloadTooLarge) as exc:
            raise InvalidTask(f"{task.module_path}: {exc}") from exc
        row = enqueued.task
        if enqueued.deduplicated:
            # The active task holding the unique key: its result as it stands, no new enqueue signal.
            return task_result(row, alias=self.alias, queue_name=task.queue_name)
        result = build_result(
            task=task,
            pk=row.pk,
            alias=self.alias,
            status=TaskResultStatus.READY,
            queue_name=task.queue_name,
            priority=row.priority,
            max_attempts=row.max_attempts,
            timeout=row.timeout_seconds,
            created_at=row.created_at,
            run_at=row.run_at,
            payload=row.payload,
            as_enqueued=True,
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def _enqueue_on_commit(self, task: Task, args: list[Any], kwargs: dict[str, Any]) -> TaskResult:
        """Return a READY TaskResult with no id yet; insert the row once the transaction commits."""
        pending = TaskResult(
            task=task,
            id="",
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

        def insert() -> None:
            done = self._insert(task, args, kwargs)
            for name in ("id", "enqueued_at", "task"):
                object.__setattr__(pending, name, getattr(done, name))

        transaction.on_commit(insert, robust=False)
        return pending


def _policy(task: Task, backend: TaskHubBackend) -> tuple[int | None, int | None]:
    """Return (max_attempts, timeout) for a task: its own, else OPTIONS; None leaves it to the queue."""
    own_attempts = getattr(task, "max_attempts", None)
    own_timeout = getattr(task, "timeout", None)
    return own_attempts or backend.max_attempts, own_timeout or backend.timeout


def _policy_problem(max_attempts: Any, timeout: Any) -> str | None:
    if max_attempts is not None and not (_is_int(max_attempts) and 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT):
        return f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}"
    if timeout is not None and not (_is_int(timeout) and 1 <= timeout <= TASK_TIMEOUT_MAX_SECONDS):
        return f"timeout must be a whole number of seconds from 1 to {TASK_TIMEOUT_MAX_SECONDS}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
