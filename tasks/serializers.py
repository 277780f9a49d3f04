"""Input and output shapes of the task and queue endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tasks.limits import validate_rate_limit
from tasks.models import (
    CONCURRENCY_KEY_MAX_LENGTH,
    DEFAULT_QUEUE_NAME,
    FAIR_WEIGHT_MAX,
    MAX_ATTEMPTS_LIMIT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TASK_TYPE_MAX_LENGTH,
    UNIQUE_KEY_MAX_LENGTH,
    OwnerQueueSettings,
    QueueConfig,
    Schedule,
    ScheduleFire,
    ScheduleFireOutcome,
    ScheduleMisfire,
    ScheduleOverlap,
    TaskQueue,
    TaskStatus,
)
from tasks.outcomes import without_traceback
from tasks.schedule_services import SCHEDULE_FIELDS
from tasks.services import QUEUE_EDITABLE_FIELDS
from tasks.specs import IDEMPOTENCY_KEY_MAX_LENGTH, ON_CONFLICT_CHOICES, ON_CONFLICT_RETURN

BULK_MAX_TASKS = 1000
INT32_MAX = 2**31 - 1


def _printable(name: object) -> str:
    """Return `name` safe to put in a JSON answer (unpaired surrogates escaped)."""
    return str(name).encode("utf-8", "backslashreplace").decode("utf-8")


def reject_surrogates(value: str) -> None:
    """Refuse text that is not valid Unicode (it can be neither stored nor answered)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError(_("Must be valid Unicode text (no unpaired surrogates).")) from None


class StrictCharField(serializers.CharField):
    """Text only: DRF would also take a number and turn it into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """JSON integers only: DRF would also take "5", 5.0 and true."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON booleans only: DRF would also take "yes", "on" and 1."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictFieldsMixin:
    """Reject input fields the serializer does not declare, naming them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(_printable(name) for name in set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: [_("Unknown field.")] for name in unknown})
        return super().to_internal_value(data)


class TaskTypeField(StrictCharField):
    """A task type; the schema lists the registered ones (the service refuses the others)."""


class QueryParamsMixin:
    """Read query parameters strictly: a parameter given empty (`?status=`) is an error, not absent."""

    ignored: tuple[str, ...] = ()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = {key: value for key, value in data.items() if key not in self.ignored}
            blank = sorted(_printable(key) for key, value in data.items() if value == "" and key in self.fields)
            if blank:
                raise serializers.ValidationError({key: [_("May not be blank.")] for key in blank})
        return super().to_internal_value(data)


class TaskCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    task_type = TaskTypeField(max_length=100, validators=[reject_surrogates], help_text="A registered handler.")
    payload = serializers.DictField(
        default=dict,
        help_text="A JSON object: at most TASK_PAYLOAD_MAX_BYTES bytes as compact JSON (413 beyond), 31 levels deep.",
    )
    priority = StrictIntegerField(min_value=PRIORITY_MIN, max_value=PRIORITY_MAX, default=0)
    queue = StrictCharField(max_length=64, default=DEFAULT_QUEUE_NAME, validators=[reject_surrogates])
    run_at = serializers.DateTimeField(
        default_timezone=UTC,
        required=False,
        allow_null=True,
        help_text="ISO 8601; without an offset it is read as UTC. Not run before this time. Default: now.",
    )
    max_attempts = StrictIntegerField(
        min_value=1, max_value=MAX_ATTEMPTS_LIMIT, required=False, allow_null=True, help_text="Default: the queue's."
    )
    idempotency_key = StrictCharField(
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        required=False,
        allow_null=True,
        validators=[reject_surrogates],
        help_text="Posting again with the same key returns the task created first (200), not a new one.",
    )
    unique_key = StrictCharField(
        max_length=UNIQUE_KEY_MAX_LENGTH,
        required=False,
        allow_null=True,
        validators=[reject_surrogates],
        help_text="At most one active (pending or running) task of yours per key in the queue; a finished task frees it.",
    )
    on_conflict = serializers.ChoiceField(
        choices=ON_CONFLICT_CHOICES,
        default=ON_CONFLICT_RETURN,
        help_text="With a unique_key held by an active task: `return` it (200, deduplicated), or `replace` "
        "its payload, run_at and priority while it is pending (once it runs, a new task is enqueued).",
    )
    concurrency_key = StrictCharField(
        max_length=CONCURRENCY_KEY_MAX_LENGTH,
        required=False,
        allow_null=True,
        validators=[reject_surrogates],
        help_text="With the queue's per_key_concurrency (and rate_limit_per_key): tasks sharing a key "
        "run at most that many at once across all workers, and draw from one rate-limit bucket.",
    )


class TaskBulkCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    tasks = TaskCreateSerializer(many=True, min_length=1, max_length=BULK_MAX_TASKS)

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            # DRF reports a list with an empty entry for every valid task; keep only the bad ones.
            errors = exc.detail
            if isinstance(errors, dict) and isinstance(errors.get("tasks"), list):
                items = errors["tasks"]
                if any(isinstance(item, dict) for item in items):
                    errors["tasks"] = {str(i): item for i, item in enumerate(items) if item}
            raise serializers.ValidationError(errors) from exc


class TaskSerializer(serializers.ModelSerializer):
    """A task as the API shows it: a Django task (`kind` "django") shows its dotted path as `task_type`."""

    queue = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = TaskQueue
        fields = (
            "id",
            "owner",
            "queue",
            "kind",
            "task_type",
            "payload",
            "priority",
            "status",
            "attempts",
            "max_attempts",
            "run_at",
            "timeout_seconds",
            "progress",
            "progress_message",
            "result",
            "error",
            "attempt_errors",
            "cancel_requested",
            "idempotency_key",
            "unique_key",
            "concurrency_key",
            "schedule",
            "claimed_by",
            "lease_expires_at",
            "created_at",
            "started_at",
            "finished_at",
        )
        read_only_fields = fields

    def to_representation(self, instance: TaskQueue) -> dict[str, Any]:
        """The task; its errors without their tracebacks unless the caller is staff (context `request`)."""
        data = super().to_representation(instance)
        request = self.context.get("request")
        if not getattr(getattr(request, "user", None), "is_staff", False):
            data["error"] = without_traceback(data["error"])
            data["attempt_errors"] = [
                {**entry, "error": without_traceback(entry.get("error") or "")} if isinstance(entry, dict) else entry
                for entry in data["attempt_errors"] or []
            ]
        return data


class TaskEnqueuedSerializer(TaskSerializer):
    """A task as an enqueue answers it: `deduplicated` when it existed already (unique or idempotency key)."""

    deduplicated = serializers.SerializerMethodField()

    class Meta(TaskSerializer.Meta):
        fields = (*TaskSerializer.Meta.fields, "deduplicated")
        read_only_fields = fields

    def get_deduplicated(self, task: TaskQueue) -> bool:
        return task.pk in self.context.get("deduplicated", ())


class TaskBulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField(help_text="Tasks inserted; the others already existed (idempotency keys).")
    tasks = TaskEnqueuedSerializer(many=True)


class TaskListQuerySerializer(QueryParamsMixin, StrictFieldsMixin, serializers.Serializer):
    ignored = ("cursor", "page_size")  # read by the pagination

    status = serializers.ChoiceField(choices=TaskStatus.choices, required=False)
    queue = serializers.CharField(max_length=64, required=False, help_text="Queue name.")
    task_type = serializers.CharField(
        max_length=TASK_TYPE_MAX_LENGTH, required=False, help_text="A handler's type or a Django task's dotted path."
    )
    created_after = serializers.DateTimeField(default_timezone=UTC, required=False, help_text="Inclusive.")
    created_before = serializers.DateTimeField(default_timezone=UTC, required=False, help_text="Exclusive.")
    user = serializers.CharField(
        max_length=150, required=False, help_text="Staff: an owner's id or username. Others see only their own."
    )


class StatisticsQuerySerializer(QueryParamsMixin, serializers.Serializer):
    # Not strict: monitors that have long called this path may add parameters of their own.

    scope = serializers.ChoiceField(
        choices=[("own", "own"), ("all", "all")], default="own", help_text="`all` (everyone's tasks) is for staff."
    )


class ThroughputSerializer(serializers.Serializer):
    since = serializers.DateTimeField(help_text="Start of the window (a whole UTC hour).")
    created = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class TaskStatisticsSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=[("own", "own"), ("all", "all")])
    by_status = serializers.DictField(child=serializers.IntegerField(), help_text="Every status, zeros included.")
    by_queue = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()), help_text="Queue name → status → count."
    )
    last_hour = ThroughputSerializer()
    last_24_hours = ThroughputSerializer()
    window_hours = serializers.IntegerField(help_text="TASKHUB_STATS_WINDOW_HOURS.")
    window_since = serializers.DateTimeField()
    failure_rate = serializers.FloatField(allow_null=True, help_text="failed / (succeeded + failed) in the window.")
    mean_wait_seconds = serializers.FloatField(
        allow_null=True, help_text="Created → started, tasks finished in the window."
    )
    mean_run_seconds = serializers.FloatField(
        allow_null=True, help_text="Started → finished, tasks finished in the window."
    )
    generated_at = serializers.DateTimeField()
    source = serializers.ChoiceField(
        choices=[("primary", "primary"), ("replica", "replica")],
        source="freshness.source",
        help_text="The database that answered: the read replica (DATABASE_REPLICA_URL) or the primary.",
    )
    as_of = serializers.DateTimeField(
        allow_null=True, source="freshness.as_of", help_text="The data is at least this recent; null: unknown."
    )
    lag_seconds = serializers.FloatField(
        allow_null=True,
        source="freshness.lag_seconds",
        help_text="How far behind the primary the data may be (0 from the primary); null: unknown.",
    )
    stale = serializers.BooleanField(
        source="freshness.stale", help_text="The lag is unknown or above DATABASE_REPLICA_MAX_LAG_SECONDS."
    )
    fallback = serializers.BooleanField(
        source="freshness.fallback",
        help_text="The read replica could not be reached, so the primary answered (source: primary).",
    )


class QueueStatusSerializer(serializers.Serializer):
    name = serializers.CharField()
    is_paused = serializers.BooleanField()
    max_concurrency = serializers.IntegerField(help_text="0 = unlimited.")
    max_active_per_user = serializers.IntegerField(allow_null=True)
    pending = serializers.IntegerField(help_text="Runnable now.")
    scheduled = serializers.IntegerField(help_text="Pending with run_at in the future.")
    running = serializers.IntegerField()
    oldest_pending_age_seconds = serializers.FloatField(
        allow_null=True, help_text="Since the oldest runnable task's run_at."
    )
    live_workers = serializers.IntegerField(help_text="Workers with a fresh heartbeat serving this queue.")
    fairness = serializers.CharField(help_text="`none` (priority, then run_at) or `owner` (round-robin across owners).")
    per_key_concurrency = serializers.IntegerField(help_text="0 = no limit.")
    rate_limit = serializers.CharField(help_text='Task starts across all workers, e.g. "100/s"; empty = no limit.')
    rate_limit_per_key = serializers.BooleanField()
    active_owners = serializers.IntegerField(help_text="Owners with runnable tasks.")
    keys_at_limit = serializers.IntegerField(help_text="Concurrency keys with per_key_concurrency tasks running.")
    throttled_by_rate = serializers.IntegerField(
        help_text="Claims that left runnable tasks behind for want of rate-limit tokens (since the bucket's creation)."
    )


class QueueSerializer(serializers.ModelSerializer):
    class Meta:
        model = QueueConfig
        fields = ("name", *QUEUE_EDITABLE_FIELDS, "created_at", "updated_at")
        read_only_fields = fields


class OwnerQueueSettingsSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    fair_weight = StrictIntegerField(
        min_value=1, max_value=FAIR_WEIGHT_MAX, help_text="Tasks per round of a fair queue's round-robin; 1 = equal."
    )

    class Meta:
        model = OwnerQueueSettings
        fields = ("user", "fair_weight", "updated_at")
        read_only_fields = ("user", "updated_at")


class QueueUpdateSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.BooleanField: StrictBooleanField,
        models.PositiveIntegerField: StrictIntegerField,
        models.PositiveSmallIntegerField: StrictIntegerField,
        models.TextField: StrictCharField,
        models.CharField: StrictCharField,
    }

    class Meta:
        model = QueueConfig
        fields = QUEUE_EDITABLE_FIELDS
        # The same bounds on every backend (a signed 32-bit INT holds them everywhere).
        extra_kwargs = {
            "description": {"validators": [reject_surrogates]},
            **{
                name: {"max_value": INT32_MAX}
                for name in (
                    "max_concurrency",
                    "retry_backoff_seconds",
                    "retry_backoff_max_seconds",
                    "max_active_per_user",
                    "per_key_concurrency",
                )
            },
            "rate_limit": {"validators": [reject_surrogates, validate_rate_limit]},
        }


class ScheduleWriteSerializer(StrictFieldsMixin, serializers.Serializer):
    """A schedule's body on create (and, partial, on PATCH): types here, the rules in the service."""

    name = StrictCharField(max_length=100, validators=[reject_surrogates])
    cron = StrictCharField(
        max_length=120,
        required=False,
        allow_blank=True,
        validators=[reject_surrogates],
        help_text="5 fields (minute hour day month weekday), or 6 with seconds last. Exactly one of cron and interval_seconds.",
    )
    interval_seconds = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=INT32_MAX)
    timezone = StrictCharField(
        max_length=64, required=False, validators=[reject_surrogates], help_text="IANA name (default UTC)."
    )
    task_type = TaskTypeField(max_length=100, validators=[reject_surrogates], help_text="A registered handler.")
    payload = serializers.DictField(required=False)
    queue = StrictCharField(max_length=64, required=False, validators=[reject_surrogates])
    priority = StrictIntegerField(min_value=PRIORITY_MIN, max_value=PRIORITY_MAX, required=False)
    max_attempts = StrictIntegerField(min_value=1, max_value=MAX_ATTEMPTS_LIMIT, required=False, allow_null=True)
    overlap = serializers.ChoiceField(choices=ScheduleOverlap.choices, required=False)
    misfire = serializers.ChoiceField(choices=ScheduleMisfire.choices, required=False)
    is_paused = StrictBooleanField(required=False)


class ScheduleSerializer(serializers.ModelSerializer):
    queue = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Schedule
        fields = ("id", "owner", *SCHEDULE_FIELDS, "next_fire_at", "last_fired_at", "created_at", "updated_at")
        read_only_fields = fields


class ScheduleRunSerializer(serializers.Serializer):
    fire_time = serializers.DateTimeField()
    outcome = serializers.ChoiceField(choices=ScheduleFireOutcome.choices)
    task = serializers.IntegerField(source="task_id", allow_null=True)
    status = serializers.SerializerMethodField(
        help_text="The task's status; null if none was created or it was purged."
    )

    def get_status(self, fire: ScheduleFire) -> str | None:
        return fire.task.status if fire.task is not None else None


class ScheduleDetailSerializer(ScheduleSerializer):
    """A schedule with its next 5 fire times (UTC) and its last runs: the instance is a `ScheduleDetail`."""

    next_fire_times = serializers.SerializerMethodField()
    last_runs = serializers.SerializerMethodField()

    class Meta(ScheduleSerializer.Meta):
        fields = (*ScheduleSerializer.Meta.fields, "next_fire_times", "last_runs")
        read_only_fields = fields

    def to_representation(self, detail: Any) -> dict[str, Any]:
        self._detail = detail
        return super().to_representation(detail.schedule)

    @extend_schema_field(serializers.ListField(child=serializers.DateTimeField()))
    def get_next_fire_times(self, schedule: Schedule) -> list[str]:
        return [moment.astimezone(UTC).isoformat().replace("+00:00", "Z") for moment in self._detail.next_fire_times]

    @extend_schema_field(ScheduleRunSerializer(many=True))
    def get_last_runs(self, schedule: Schedule) -> list[dict[str, Any]]:
        return ScheduleRunSerializer(self._detail.last_runs, many=True).data
