"""Queues, tasks, workers, and the counters that keep statistics cheap."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Case, F, Q, When
from django.utils import timezone
from django.utils.timezone import now as _now
from django.utils.translation import gettext_lazy as _

from tasks.histograms import RUN_COLUMNS, WAIT_COLUMNS
from tasks.limits import RATE_LIMIT_MAX_LENGTH, validate_rate_limit
from tasks.querysets import TaskQuerySet

PRIORITY_MIN = -100
PRIORITY_MAX = 100
MAX_ATTEMPTS_LIMIT = 100
TASK_TIMEOUT_MAX_SECONDS = 7 * 24 * 3600
DEFAULT_QUEUE_NAME = "default"

queue_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    _("Use letters, digits, '.', '_' and '-' only, starting with a letter or digit."),
)


class TaskStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


class TaskKind(models.TextChoices):
    # A handler of the registry (`tasks.registry`), named by its task type.
    HANDLER = "handler", _("Registry handler")
    # A Django Tasks `Task` (`tasks.backends`), named by its dotted path.
    DJANGO = "django", _("Django task")


TASK_TYPE_MAX_LENGTH = 255
UNIQUE_KEY_MAX_LENGTH = 200
CONCURRENCY_KEY_MAX_LENGTH = 200


class Fairness(models.TextChoices):
    # Best first: priority, then run_at, then id.
    NONE = "none", _("None: priority, then run time")
    # Each claim takes tasks from the owners with runnable tasks in turn (`tasks.fair_claim`).
    OWNER = "owner", _("Owner: round-robin across owners")


ACTIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.RUNNING)
FINISHED_STATUSES = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class QueueConfig(models.Model):
    name = models.CharField(_("name"), max_length=64, unique=True, validators=[queue_name_validator])
    description = models.TextField(_("description"), blank=True)
    is_paused = models.BooleanField(_("paused"), default=False)
    max_concurrency = models.PositiveIntegerField(
        _("max concurrency"), default=0, help_text=_("Running tasks across all workers; 0 = unlimited.")
    )
    max_attempts = models.PositiveSmallIntegerField(
        _("default max attempts"),
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_ATTEMPTS_LIMIT)],
    )
    retry_backoff_seconds = models.PositiveIntegerField(
        _("retry backoff base (s)"), default=10, validators=[MinValueValidator(1)]
    )
    retry_backoff_max_seconds = models.PositiveIntegerField(
        _("retry backoff cap (s)"), default=3600, validators=[MinValueValidator(1)]
    )
    task_timeout_seconds = models.PositiveIntegerField(
        _("task timeout / lease (s)"),
        default=300,
        validators=[MinValueValidator(1), MaxValueValidator(TASK_TIMEOUT_MAX_SECONDS)],
    )
    max_active_per_user = models.PositiveIntegerField(
        _("max active tasks per user"),
        null=True,
        blank=True,
        help_text=_("Pending plus running tasks one user may have in this queue; empty = no limit."),
    )
    fairness = models.CharField(
        _("fairness"),
        max_length=8,
        choices=Fairness.choices,
        default=Fairness.NONE,
        help_text=_("owner: each claim takes tasks from the owners with runnable tasks in turn."),
    )
    per_key_concurrency = models.PositiveIntegerField(
        _("per-key concurrency"),
        default=0,
        help_text=_("Running tasks per concurrency key across all workers; 0 = no limit."),
    )
    rate_limit = models.CharField(
        _("rate limit"),
        max_length=RATE_LIMIT_MAX_LENGTH,
        blank=True,
        default="",
        validators=[validate_rate_limit],
        help_text=_('Task starts across all workers, e.g. "100/s" or "600/m"; empty = no limit.'),
    )
    rate_limit_per_key = models.BooleanField(
        _("rate limit per key"),
        default=False,
        help_text=_("Apply the rate limit to each concurrency key on its own (tasks without a key share one)."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        db_table = "queue_config"
        ordering = ["name"]
        verbose_name = _("queue")
        verbose_name_plural = _("queues")
        constraints = [
            models.CheckConstraint(condition=Q(task_timeout_seconds__gte=1), name="queue_config_timeout_positive"),
            models.CheckConstraint(condition=Q(fairness__in=Fairness.values), name="queue_config_fairness_valid"),
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1, max_attempts__lte=MAX_ATTEMPTS_LIMIT),
                name="queue_config_max_attempts_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if (
            self.retry_backoff_seconds
            and self.retry_backoff_max_seconds
            and self.retry_backoff_max_seconds < self.retry_backoff_seconds
        ):
            raise ValidationError(
                {"retry_backoff_max_seconds": _("The backoff cap must not be below the backoff base.")}
            )


class TaskQueue(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks", verbose_name=_("owner")
    )
    queue = models.ForeignKey(QueueConfig, on_delete=models.PROTECT, related_name="tasks", verbose_name=_("queue"))
    kind = models.CharField(_("kind"), max_length=8, choices=TaskKind.choices, default=TaskKind.HANDLER)
    # A registered handler's name, or a Django task's dotted path (hence the length).
    task_type = models.CharField(_("task type"), max_length=TASK_TYPE_MAX_LENGTH)
    payload = models.JSONField(_("payload"), default=dict, blank=True)
    priority = models.SmallIntegerField(
        _("priority"),
        default=0,
        validators=[MinValueValidator(PRIORITY_MIN), MaxValueValidator(PRIORITY_MAX)],
        help_text=_("Higher runs first."),
    )
    status = models.CharField(_("status"), max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    max_attempts = models.PositiveSmallIntegerField(
        _("max attempts"), default=3, validators=[MinValueValidator(1), MaxValueValidator(MAX_ATTEMPTS_LIMIT)]
    )
    run_at = models.DateTimeField(_("run at"), default=timezone.now, help_text=_("Not before this time."))
    timeout_seconds = models.PositiveIntegerField(
        _("task timeout / lease (s)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(TASK_TIMEOUT_MAX_SECONDS)],
        help_text=_("This task's own timeout; empty = its queue's."),
    )
    claimed_by = models.CharField(_("claimed by"), max_length=128, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    progress = models.PositiveSmallIntegerField(
        _("progress"), default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    progress_message = models.CharField(_("progress message"), max_length=255, blank=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    # One entry per failed attempt, oldest first, written by the UPDATE that records the failure:
    # {"attempt", "worker", "exception" (class path), "error", "started_at"}. With `claimed_by` of
    # the attempt under way it gives every attempt's worker (Django's `worker_ids`).
    attempt_errors = models.JSONField(_("errors of earlier attempts"), default=list, blank=True)
    cancel_requested = models.BooleanField(_("cancel requested"), default=False)
    idempotency_key = models.CharField(_("idempotency key"), max_length=128, null=True, blank=True)
    # Unique among the owner's active tasks in the queue (`task_active_unique_key_uniq`); a
    # finished task frees it. A running task superseded by `on_conflict=replace` lets go of it.
    unique_key = models.CharField(_("unique key"), max_length=UNIQUE_KEY_MAX_LENGTH, null=True, blank=True)
    # The key while the task is active, NULL once it finishes: the database keeps it in step
    # with `status` (a stored generated column), so the unique constraint below enforces
    # "one active task per key" without a partial index (MySQL/MariaDB have none). NULLs never collide.
    active_unique_key = models.GeneratedField(
        expression=Case(
            When(status__in=[TaskStatus.PENDING, TaskStatus.RUNNING], then=F("unique_key")),
            default=None,
            output_field=models.CharField(max_length=UNIQUE_KEY_MAX_LENGTH, null=True),
        ),
        output_field=models.CharField(max_length=UNIQUE_KEY_MAX_LENGTH, null=True),
        db_persist=True,
        verbose_name=_("active unique key"),
    )
    # At most the queue's `per_key_concurrency` tasks with the same key run at once (NULL: no key).
    concurrency_key = models.CharField(
        _("concurrency key"), max_length=CONCURRENCY_KEY_MAX_LENGTH, null=True, blank=True
    )
    # The failure group (`tasks.failure_groups`) of a task that failed for good; cleared when it is retried.
    # No database constraint: the group key is computed, and the group row is written after the task's UPDATE.
    failure_group = models.ForeignKey(
        "FailureGroup",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # task_failure_group_idx leads with it
        related_name="+",
        verbose_name=_("failure group"),
    )
    # The schedule that created this task (`tasks.schedules`), if any.
    schedule = models.ForeignKey(
        "Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        db_index=False,  # task_schedule_idx, declared below
        verbose_name=_("schedule"),
    )
    # The schedule while the task is active, NULL once it finishes (a stored generated column,
    # like `active_unique_key`): a schedule's active runs are found through its own index, and a
    # task of no schedule keeps NULL there whatever its status, so no status change of an
    # ordinary task touches a schedule index.
    active_schedule_id = models.GeneratedField(
        expression=Case(
            When(status__in=[TaskStatus.PENDING, TaskStatus.RUNNING], then=F("schedule")),
            default=None,
            output_field=models.BigIntegerField(null=True),
        ),
        output_field=models.BigIntegerField(null=True),
        db_persist=True,
        verbose_name=_("active schedule"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        db_table = "task_queue"
        ordering = ["-id"]
        verbose_name = _("task")
        verbose_name_plural = _("tasks")
        indexes = [
            # Claim: WHERE status='pending' AND queue_id=? AND run_at<=now
            #        ORDER BY priority DESC, run_at, id  ... FOR UPDATE SKIP LOCKED.
            # Also serves queue-status counts of pending/scheduled per queue.
            models.Index(fields=["status", "queue", "-priority", "run_at"], name="task_claim_idx"),
            # Fair claim (`tasks.fair_claim`): the owners with pending tasks (bounded reads of
            # WHERE status='pending' AND queue_id=? AND owner_id>? ORDER BY owner_id), then each
            # one's best: ... AND owner_id=? AND run_at<=now ORDER BY priority DESC, run_at, id.
            models.Index(fields=["status", "queue", "owner", "-priority", "run_at"], name="task_fair_idx"),
            # Lease recovery and the console's stuck list: WHERE status='running' AND
            # lease_expires_at < now ORDER BY lease_expires_at.
            models.Index(fields=["status", "lease_expires_at"], name="task_lease_idx"),
            # Everyone's statistics: live tasks counted by (status, queue) with their creations
            # in the windows (WHERE status IN (pending, running) GROUP BY status, queue_id), read
            # from index entries in GROUP BY order: no row read, no temporary table.
            models.Index(fields=["status", "queue", "created_at"], name="task_live_idx"),
            # A user's own list filtered by status (ORDER BY id DESC; InnoDB appends the PK).
            models.Index(fields=["owner", "status"], name="task_owner_status_idx"),
            # A user's own list and windows by creation time.
            models.Index(fields=["owner", "created_at"], name="task_owner_created_idx"),
            # Staff windows and retention by creation time.
            models.Index(fields=["created_at"], name="task_created_idx"),
            # A user's own list, newest first: WHERE owner_id=? ORDER BY id DESC (cursor pages).
            # On InnoDB no owner-only index exists (the FK reuses the composite ones above).
            models.Index(fields=["owner", "id"], name="task_owner_id_idx"),
            # A schedule's tasks (the foreign key; SET_NULL when a schedule is deleted).
            models.Index(fields=["schedule"], name="task_schedule_idx"),
            # A schedule's active runs (overlap=skip): WHERE active_schedule_id=?.
            models.Index(fields=["active_schedule_id"], name="task_active_schedule_idx"),
            # A failure group's tasks by keyset: WHERE failure_group_id=? AND id>? ORDER BY id (console, bulk actions).
            models.Index(fields=["failure_group", "id"], name="task_failure_group_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["owner", "idempotency_key"], name="task_owner_idempotency_uniq"),
            # One active task per (owner, queue, unique key): the holder of a key is found through it too.
            models.UniqueConstraint(fields=["owner", "queue", "active_unique_key"], name="task_active_unique_key_uniq"),
            models.CheckConstraint(condition=Q(progress__gte=0, progress__lte=100), name="task_progress_range"),
            models.CheckConstraint(
                condition=Q(priority__gte=PRIORITY_MIN, priority__lte=PRIORITY_MAX), name="task_priority_range"
            ),
            models.CheckConstraint(condition=Q(status__in=TaskStatus.values), name="task_status_valid"),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="task_max_attempts_positive"),
            models.CheckConstraint(condition=Q(kind__in=TaskKind.values), name="task_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task_type} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class QueueRateBucket(models.Model):
    """The token bucket of a queue's rate limit (`tasks.limits`): one per queue, or per concurrency key.

    Written only by claims, while they hold the queue's row lock: the whole fleet draws from it.
    """

    queue = models.ForeignKey(QueueConfig, on_delete=models.CASCADE, related_name="+")
    # "": the whole queue (or, with rate_limit_per_key, the tasks without a key).
    key = models.CharField(max_length=CONCURRENCY_KEY_MAX_LENGTH, blank=True, default="")
    tokens = models.FloatField()
    refilled_at = models.DateTimeField()
    # Claims that left runnable tasks behind for want of tokens.
    throttled = models.BigIntegerField(default=0)

    class Meta:
        db_table = "queue_rate_bucket"
        constraints = [models.UniqueConstraint(fields=["queue", "key"], name="queue_rate_bucket_uniq")]

    def __str__(self) -> str:
        return f"{self.queue_id}/{self.key or '*'}: {self.tokens:.2f}"


FAIR_WEIGHT_MAX = 100


class OwnerQueueSettings(models.Model):
    """A user's queue settings set by staff: the weight of their share in a fair queue's round-robin."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="queue_settings"
    )
    fair_weight = models.PositiveSmallIntegerField(
        _("fair weight"),
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(FAIR_WEIGHT_MAX)],
        help_text=_(
            "Tasks this user may start per round of a fair queue's round-robin (fairness=owner); 1 = an equal share."
        ),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        db_table = "owner_queue_settings"
        verbose_name = _("owner queue settings")
        verbose_name_plural = _("owner queue settings")
        constraints = [
            models.CheckConstraint(
                condition=Q(fair_weight__gte=1, fair_weight__lte=FAIR_WEIGHT_MAX),
                name="owner_queue_settings_weight_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: weight {self.fair_weight}"


class WorkerProcess(models.Model):
    """One row per live worker process; heartbeats keep it fresh."""

    worker_id = models.CharField(_("worker id"), max_length=128, unique=True)
    hostname = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("pid"))
    queues = models.JSONField(_("queues"), default=list, blank=True, help_text=_("Empty = all queues."))
    concurrency = models.PositiveSmallIntegerField(_("concurrency"), default=1)
    key_fingerprint = models.CharField(
        _("JWT key fingerprint"), max_length=32, blank=True, help_text=_("The kid of the worker's JWT_SECRET_KEY.")
    )
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    last_heartbeat_at = models.DateTimeField(_("last heartbeat"), default=timezone.now, db_index=True)
    tasks_processed = models.PositiveBigIntegerField(_("tasks processed"), default=0)
    # Resident memory of the worker and its child processes, written by each heartbeat (NULL: not reported).
    memory_rss_bytes = models.PositiveBigIntegerField(_("memory (RSS, bytes)"), null=True, blank=True)
    # Set by staff ("drain this worker"); the worker's heartbeat sees it, it claims nothing more,
    # finishes what it holds and exits 0.
    drain_requested_at = models.DateTimeField(_("drain requested at"), null=True, blank=True)

    class Meta:
        db_table = "task_worker"
        ordering = ["hostname", "pid"]
        verbose_name = _("worker")
        verbose_name_plural = _("workers")

    def __str__(self) -> str:
        return self.worker_id


class TaskStatusCount(models.Model):
    """Finished tasks per owner, queue and status, kept in step with `task_queue`.

    Only finished statuses are counted here: they grow without bound, so counting them live
    would scan the whole table. Pending and running are few and counted live from indexes.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    queue = models.ForeignKey(QueueConfig, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=TaskStatus.choices)
    count = models.BigIntegerField(default=0)

    class Meta:
        db_table = "task_status_count"
        constraints = [
            models.UniqueConstraint(fields=["owner", "queue", "status"], name="task_status_count_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.owner_id}/{self.queue_id}/{self.status}={self.count}"


class TaskHourlyStats(models.Model):
    """Events per owner, queue and hour (UTC): created and finished counts, wait and run sums."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    queue = models.ForeignKey(QueueConfig, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    created = models.BigIntegerField(default=0)
    succeeded = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    cancelled = models.BigIntegerField(default=0)
    started = models.BigIntegerField(default=0, help_text="Finished tasks that had started.")
    wait_seconds_sum = models.FloatField(default=0.0)
    run_seconds_sum = models.FloatField(default=0.0)

    class Meta:
        db_table = "task_hourly_stats"
        constraints = [
            # Also serves a user's windows: WHERE owner_id=? AND hour >= ?.
            models.UniqueConstraint(fields=["owner", "hour", "queue"], name="task_hourly_stats_uniq"),
        ]
        indexes = [
            # Staff-wide windows: WHERE hour >= ?.
            models.Index(fields=["hour"], name="task_hourly_stats_hour_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.owner_id}/{self.queue_id}@{self.hour:%Y-%m-%d %H}:00"


# Minute rows older than this are pruned by `purge_tasks` (tasks.retention); the 7-day chart needs 7 days.
MINUTE_STATS_RETENTION_DAYS = 8


class QueueEventCounts(models.Model):
    """The events a rollup row counts for one queue: starts, outcomes, wait and run time sums."""

    queue = models.ForeignKey(QueueConfig, on_delete=models.CASCADE, related_name="+")
    started = models.BigIntegerField(default=0)
    succeeded = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    cancelled = models.BigIntegerField(default=0)
    wait_seconds_sum = models.FloatField(default=0.0)
    run_seconds_sum = models.FloatField(default=0.0)

    class Meta:
        abstract = True


class TaskMinuteStats(QueueEventCounts):
    """Events per queue and minute (UTC): tasks started, finished by outcome, wait and run time histograms.

    A finished task is counted once, when it finishes: `started` and its wait time in the minute it
    started, its outcome and run time in the minute it finished (each measure in the minute its
    interval ended). The histogram columns (`wait_h00`…, `run_h00`…) are `tasks.histograms` buckets.
    """

    minute = models.DateTimeField()

    class Meta:
        db_table = "task_minute_stats"
        constraints = [
            # The counters' upsert key; also serves one queue's chart: WHERE queue_id=? AND minute >= ?.
            models.UniqueConstraint(fields=["queue", "minute"], name="task_minute_stats_uniq"),
        ]
        indexes = [
            # Every queue's window (the queues panel, the charts) and the retention prune: WHERE minute >= ? / < ?.
            models.Index(fields=["minute"], name="task_minute_stats_minute_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.queue_id}@{self.minute:%Y-%m-%d %H:%M}"


class TaskHourStats(QueueEventCounts):
    """`task_minute_stats` summed per queue and UTC hour, for the console's 24-hour and 7-day charts.

    Not kept in step by the counters: `tasks.hour_stats.roll_up_hours` recomputes whole hours from
    the minute rows once they are over (a worker's heartbeat, at most once an hour) and moves
    `TaskHourStatsMark` on; the charts read the hours before the mark here and the minutes after
    it from `task_minute_stats`. Unrelated to `task_hourly_stats` (per owner, no histograms).
    """

    hour = models.DateTimeField()

    class Meta:
        db_table = "task_hour_stats"
        constraints = [
            # The roll-up's upsert key; also serves one queue's chart: WHERE queue_id=? AND hour >= ? AND hour < ?.
            models.UniqueConstraint(fields=["queue", "hour"], name="task_hour_stats_uniq"),
        ]
        indexes = [
            # Every queue's chart and the retention prune: WHERE hour >= ? AND hour < ? / hour < ?.
            models.Index(fields=["hour"], name="task_hour_stats_hour_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.queue_id}@{self.hour:%Y-%m-%d %H}:00"


for _model in (TaskMinuteStats, TaskHourStats):
    for _column in (*WAIT_COLUMNS, *RUN_COLUMNS):
        _model.add_to_class(_column, models.IntegerField(default=0))


class TaskHourStatsMark(models.Model):
    """One row (id 1): every hour before `rolled_up_to` is in `task_hour_stats`. No row: none is."""

    rolled_up_to = models.DateTimeField()

    class Meta:
        db_table = "task_hour_stats_mark"

    def __str__(self) -> str:
        return f"hours rolled up to {self.rolled_up_to:%Y-%m-%d %H}:00"


class ScheduleOverlap(models.TextChoices):
    ALLOW = "allow", _("Allow")
    # Do not fire while the previous run of this schedule is still pending or running.
    SKIP = "skip", _("Skip while the previous run is active")


class ScheduleMisfire(models.TextChoices):
    # After downtime: fire nothing that was missed; carry on with the next fire time.
    SKIP = "skip", _("Skip missed fire times")
    # After downtime: fire the latest missed time once (never a flood).
    RUN_ONCE = "run_once", _("Run the latest missed time once")


class Schedule(models.Model):
    """A recurring task: a cron expression or an interval; fired by every worker, claimed once (`tasks.schedules`)."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="task_schedules", verbose_name=_("owner")
    )
    name = models.CharField(_("name"), max_length=100)
    cron = models.CharField(
        _("cron expression"), max_length=120, blank=True, help_text=_("5 fields, optionally a 6th for seconds.")
    )
    interval_seconds = models.PositiveIntegerField(_("interval (s)"), null=True, blank=True)
    timezone = models.CharField(_("time zone"), max_length=64, default="UTC", help_text=_("IANA name."))
    kind = models.CharField(_("kind"), max_length=8, choices=TaskKind.choices, default=TaskKind.HANDLER)
    task_type = models.CharField(_("task type"), max_length=TASK_TYPE_MAX_LENGTH)
    payload = models.JSONField(_("payload"), default=dict, blank=True)
    queue = models.ForeignKey(QueueConfig, on_delete=models.PROTECT, related_name="schedules", verbose_name=_("queue"))
    priority = models.SmallIntegerField(
        _("priority"), default=0, validators=[MinValueValidator(PRIORITY_MIN), MaxValueValidator(PRIORITY_MAX)]
    )
    max_attempts = models.PositiveSmallIntegerField(
        _("max attempts"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_ATTEMPTS_LIMIT)],
        help_text=_("Empty = the queue's."),
    )
    overlap = models.CharField(
        _("overlap"), max_length=8, choices=ScheduleOverlap.choices, default=ScheduleOverlap.ALLOW
    )
    misfire = models.CharField(
        _("misfire"), max_length=8, choices=ScheduleMisfire.choices, default=ScheduleMisfire.RUN_ONCE
    )
    is_paused = models.BooleanField(_("paused"), default=False)
    # The next fire time not yet claimed; NULL while paused. Workers look for due schedules by it.
    next_fire_at = models.DateTimeField(_("next fire at"), null=True, blank=True, editable=False)
    last_fired_at = models.DateTimeField(_("last fired at"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), default=_now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        db_table = "task_schedule"
        ordering = ["name", "id"]
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")
        indexes = [
            # The workers' tick: WHERE next_fire_at <= now ORDER BY next_fire_at (paused: NULL, never due).
            models.Index(fields=["next_fire_at"], name="task_schedule_due_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="task_schedule_owner_name_uniq"),
            models.CheckConstraint(
                condition=(Q(cron="") & Q(interval_seconds__gte=1)) | (~Q(cron="") & Q(interval_seconds__isnull=True)),
                name="task_schedule_cron_xor_interval",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ScheduleFireOutcome(models.TextChoices):
    FIRED = "fired", _("Fired")
    MANUAL = "manual", _("Run now")
    SKIPPED_OVERLAP = "overlap", _("Skipped: the previous run is active")
    SKIPPED_QUOTA = "quota", _("Skipped: the owner's quota is full")
    INVALID = "invalid", _("Skipped: its task no longer passes the checks")


class ScheduleFire(models.Model):
    """One fire time of a schedule, claimed by inserting this row (unique per schedule and time)."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="fires", db_index=False)
    fire_time = models.DateTimeField(_("fire time"))
    outcome = models.CharField(_("outcome"), max_length=8, choices=ScheduleFireOutcome.choices)
    # No database constraint: retention purges tasks without touching their fire rows.
    task = models.ForeignKey(
        TaskQueue, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"), default=_now)

    class Meta:
        db_table = "task_schedule_fire"
        ordering = ["-fire_time"]
        verbose_name = _("schedule fire")
        verbose_name_plural = _("schedule fires")
        constraints = [
            # The claim of a fire time: the second node's INSERT fails. Also serves a schedule's last runs.
            models.UniqueConstraint(fields=["schedule", "fire_time"], name="task_schedule_fire_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id}@{self.fire_time:%Y-%m-%d %H:%M:%S} {self.outcome}"


class FailureGroup(models.Model):
    """Tasks that failed for good, grouped by task type, exception class and message fingerprint.

    Kept in step by `tasks.transitions` (through `tasks.failure_groups`) in the transaction of each
    change: `count` is how many tasks of the group are failed now (a retry, a delete or a purge
    takes them out); `first_seen`/`last_seen` are history and never go back.
    """

    # sha1 of (task type, exception class, fingerprint): computed before any statement runs.
    key = models.CharField(_("key"), max_length=40, primary_key=True)
    task_type = models.CharField(_("task type"), max_length=TASK_TYPE_MAX_LENGTH)
    exception = models.CharField(_("exception class"), max_length=255, blank=True)
    fingerprint = models.CharField(_("fingerprint"), max_length=500)
    count = models.BigIntegerField(_("failed now"), default=0)
    first_seen = models.DateTimeField(_("first seen"))
    last_seen = models.DateTimeField(_("last seen"))
    # The first failure's task and error (headline and traceback), kept even once that task is gone.
    example_task_id = models.BigIntegerField(_("example task"), null=True, blank=True)
    example_error = models.TextField(_("example error"), blank=True)

    class Meta:
        db_table = "task_failure_group"
        ordering = ["-last_seen", "key"]
        verbose_name = _("failure group")
        verbose_name_plural = _("failure groups")
        indexes = [
            # The console's list, most recent first, by keyset: ORDER BY last_seen DESC, key.
            models.Index(fields=["-last_seen", "key"], name="task_failure_group_seen_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.task_type} {self.exception}: {self.fingerprint[:80]}"


class BulkActionKind(models.TextChoices):
    RETRY = "retry", _("Retry")
    CANCEL = "cancel", _("Cancel")
    DELETE = "delete", _("Delete")
    PRIORITY = "priority", _("Change priority")
    MOVE = "move", _("Move to another queue")
    # Not a bulk action by filter: the audit record of a "drain this worker" request (recorded done).
    DRAIN = "drain", _("Drain a worker")


class BulkActionState(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


class BulkAction(models.Model):
    """One bulk action by filter (`tasks.bulk`): its filter, cursor and counts; also the audit record."""

    action = models.CharField(_("action"), max_length=16, choices=BulkActionKind.choices)
    # The validated filter (field -> value) and the action's parameters (priority, target queue id).
    filters = models.JSONField(_("filter"), default=dict)
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    state = models.CharField(_("state"), max_length=16, choices=BulkActionState.choices, default=BulkActionState.QUEUED)
    # The last task id walked: the next batch starts after it. Written in each batch's transaction.
    cursor = models.BigIntegerField(_("cursor"), default=0)
    # The highest task id when the action was created: tasks created later are never touched.
    last_id = models.BigIntegerField(_("last task id"), default=0)
    scanned = models.BigIntegerField(_("tasks scanned"), default=0)
    changed = models.BigIntegerField(_("tasks changed"), default=0)
    batches = models.PositiveIntegerField(_("batches"), default=0)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", verbose_name=_("by")
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        db_table = "task_bulk_action"
        ordering = ["-id"]
        verbose_name = _("bulk action")
        verbose_name_plural = _("bulk actions")
        indexes = [
            # The runner's "what is left to do": WHERE state IN ('queued', 'running') ORDER BY id.
            models.Index(fields=["state", "id"], name="task_bulk_action_state_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} ({self.state})"
