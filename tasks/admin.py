"""Admin: staff steer queues, inspect and retry/cancel tasks, and see live workers."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import DatabaseError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from core.db.statement_time import bounded_statement_time, is_statement_timeout
from tasks import admin_list, schedule_services, selectors, services
from tasks.errors import TaskSpecInvalid, TaskStateConflict
from tasks.models import (
    BulkAction,
    FailureGroup,
    OwnerQueueSettings,
    QueueConfig,
    Schedule,
    ScheduleFire,
    TaskQueue,
    WorkerProcess,
)


@admin.register(QueueConfig)
class QueueConfigAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "is_paused",
        "max_concurrency",
        "max_attempts",
        "task_timeout_seconds",
        "max_active_per_user",
        "fairness",
        "per_key_concurrency",
        "rate_limit",
        "updated_at",
    )
    list_editable = ("is_paused", "max_concurrency", "max_attempts", "task_timeout_seconds", "max_active_per_user")
    list_filter = ("is_paused", "fairness")
    search_fields = ("name", "description")
    readonly_fields = ("fair_status", "created_at", "updated_at")
    actions = ("pause_queues", "resume_queues")

    @admin.display(description=_("Fair shares now"))
    def fair_status(self, queue: QueueConfig) -> str:
        if queue.pk is None:
            return "—"
        shares = selectors.fair_shares(timezone.now(), [queue])
        return _("Active owners: %(owners)d · keys at limit: %(keys)d · rate-throttled claims: %(throttled)d") % {
            "owners": shares.owners.get(queue.pk, 0),
            "keys": shares.keys_at_limit(queue),
            "throttled": shares.throttled.get(queue.pk, 0),
        }

    @admin.action(description=_("Pause selected queues"))
    def pause_queues(self, request: HttpRequest, queryset: QuerySet[QueueConfig]) -> None:
        self._set_paused(request, queryset, paused=True)

    @admin.action(description=_("Resume selected queues"))
    def resume_queues(self, request: HttpRequest, queryset: QuerySet[QueueConfig]) -> None:
        self._set_paused(request, queryset, paused=False)

    def _set_paused(self, request: HttpRequest, queryset: QuerySet[QueueConfig], *, paused: bool) -> None:
        for queue in queryset:
            services.queue_set_paused(queue=queue, paused=paused)
        self.message_user(request, _("%(count)d queue(s) updated.") % {"count": queryset.count()}, messages.SUCCESS)


@admin.register(OwnerQueueSettings)
class OwnerQueueSettingsAdmin(admin.ModelAdmin):
    list_display = ("user", "fair_weight", "updated_at")
    list_editable = ("fair_weight",)
    search_fields = ("user__username",)
    autocomplete_fields = ("user",)
    readonly_fields = ("updated_at",)


def _pretty_json(value: Any) -> str:
    if value is None:
        return "—"
    return format_html("<pre style='white-space: pre-wrap'>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


@admin.register(TaskQueue)
class TaskQueueAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "task_type",
        "status",
        "queue",
        "owner",
        "priority",
        "attempts",
        "progress",
        "created_at",
        "finished_at",
    )
    # At millions of rows nothing here may read the whole table (tasks/admin_list.py says how).
    list_filter = ("status", "queue", "kind", admin_list.TaskTypeFilter)
    search_fields = ("id",)  # shows the search box; get_search_results reads one column
    search_help_text = admin_list.search_help()
    list_select_related = ("queue", "owner")
    paginator = admin_list.CappedCountPaginator
    show_full_result_count = False
    sortable_by = ("id",)
    ordering = ("-id",)
    actions = ("retry_tasks", "cancel_tasks")
    fields = (
        "id",
        "owner",
        "queue",
        "kind",
        "task_type",
        "status",
        "priority",
        "attempts",
        "max_attempts",
        "run_at",
        "timeout_seconds",
        "claimed_by",
        "lease_expires_at",
        "progress",
        "progress_message",
        "cancel_requested",
        "idempotency_key",
        "unique_key",
        "concurrency_key",
        "schedule",
        "created_at",
        "started_at",
        "finished_at",
        "payload_pretty",
        "result_pretty",
        "error",
        "attempt_errors_pretty",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tasks are enqueued through the API and its service, which validates the task type.
        return False

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[admin_list.TaskChangeList]:
        return admin_list.TaskChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[TaskQueue], search_term: str
    ) -> tuple[QuerySet[TaskQueue], bool]:
        if not search_term.strip():
            return queryset, False
        return admin_list.search(queryset, search_term), False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        """The list, its reads bounded in time: a filter no index serves stops and says what to narrow."""
        try:
            with bounded_statement_time(admin_list.LIST_TIME_LIMIT):
                response = super().changelist_view(request, extra_context)
                if hasattr(response, "render"):
                    response.render()  # the page's reads run here, inside the bound
                return response
        except DatabaseError as exc:
            if not is_statement_timeout(exc):
                raise
        self.message_user(
            request,
            _(
                "This list took longer than %(seconds)g s and was stopped: the filters or search used have no "
                "index to serve them at this size. Narrow it by status and queue, or search by id or owner."
            )
            % {"seconds": admin_list.LIST_TIME_LIMIT},
            messages.WARNING,
        )
        return HttpResponseRedirect(reverse("admin:tasks_taskqueue_changelist"))

    def has_change_permission(self, request: HttpRequest, obj: TaskQueue | None = None) -> bool:
        # The task page is for reading; state changes go through the actions and their services.
        return False

    @admin.display(description=_("payload"))
    def payload_pretty(self, obj: TaskQueue) -> str:
        return _pretty_json(obj.payload)

    @admin.display(description=_("errors of earlier attempts"))
    def attempt_errors_pretty(self, obj: TaskQueue) -> str:
        return _pretty_json(obj.attempt_errors)

    @admin.display(description=_("result"))
    def result_pretty(self, obj: TaskQueue) -> str:
        return _pretty_json(obj.result)

    @admin.action(description=_("Retry selected failed/cancelled tasks"), permissions=["view"])
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[TaskQueue]) -> None:
        done = skipped = 0
        for task in list(queryset):
            try:
                services.task_retry(task=task, by=request.user)
                done += 1
            except TaskStateConflict:
                skipped += 1
        self._report(request, done, skipped, _("retried"))

    @admin.action(description=_("Cancel selected pending/running tasks"), permissions=["view"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[TaskQueue]) -> None:
        done = skipped = 0
        for task in queryset:
            try:
                services.task_cancel(task=task, by=request.user)
                done += 1
            except TaskStateConflict:
                skipped += 1
        self._report(request, done, skipped, _("cancelled (or cancel requested)"))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[TaskQueue]) -> None:
        services.tasks_delete(queryset=queryset)

    def delete_model(self, request: HttpRequest, obj: TaskQueue) -> None:
        services.tasks_delete(queryset=TaskQueue.objects.filter(pk=obj.pk))

    def _report(self, request: HttpRequest, done: int, skipped: int, verb: str) -> None:
        message = ngettext("%(count)d task %(verb)s.", "%(count)d tasks %(verb)s.", done) % {
            "count": done,
            "verb": verb,
        }
        if skipped:
            message += " " + ngettext(
                "%(count)d skipped: not in a state that allows it.",
                "%(count)d skipped: not in a state that allows it.",
                skipped,
            ) % {"count": skipped}
        self.message_user(request, message, messages.SUCCESS if done else messages.WARNING)


@admin.register(WorkerProcess)
class WorkerProcessAdmin(admin.ModelAdmin):
    list_display = (
        "worker_id",
        "hostname",
        "pid",
        "queues",
        "concurrency",
        "started_at",
        "last_heartbeat_at",
        "tasks_processed",
        "memory_rss_bytes",
        "drain_requested_at",
    )
    search_fields = ("worker_id", "hostname")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WorkerProcess | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: WorkerProcess | None = None) -> bool:
        return False


class ScheduleFireInline(admin.TabularInline):
    model = ScheduleFire
    fields = ("fire_time", "outcome", "task", "created_at")
    readonly_fields = fields
    ordering = ("-fire_time",)
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScheduleFire]:
        # The last runs only: fire rows are kept for the tasks' retention.
        recent = super().get_queryset(request).order_by("-fire_time").values_list("pk", flat=True)[:20]
        return super().get_queryset(request).filter(pk__in=list(recent)).select_related("task")


class ScheduleForm(forms.ModelForm):
    """The admin's schedule form: the same rules as the REST API (`schedule_services`)."""

    class Meta:
        model = Schedule
        fields = ("owner", *schedule_services.SCHEDULE_FIELDS)
        help_texts = {
            "task_type": _("A registered handler, or (kind Django task) a @task's dotted path."),
            "payload": _('A handler\'s payload, or a Django task\'s {"args": [...], "kwargs": {...}}.'),
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        values = {**data, "queue": data["queue"].name}
        values.pop("owner", None)
        try:
            schedule_services.check(values, owner_id=data["owner"].pk)
        except TaskSpecInvalid as exc:
            raise forms.ValidationError({name: message for name, message in exc.errors.items()}) from exc
        return data


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = (
        "name",
        "owner",
        "cron",
        "interval_seconds",
        "timezone",
        "task_type",
        "queue",
        "is_paused",
        "next_fire_at",
        "last_fired_at",
    )
    list_filter = ("is_paused", "queue", "overlap", "misfire")
    search_fields = ("name", "task_type", "owner__username")
    list_select_related = ("queue", "owner")
    readonly_fields = ("next_fire_at", "last_fired_at", "created_at", "updated_at")
    inlines = (ScheduleFireInline,)
    actions = ("pause_schedules", "resume_schedules")

    def save_model(self, request: HttpRequest, obj: Schedule, form: forms.ModelForm, change: bool) -> None:
        timing_changed = not change or bool(set(form.changed_data) & schedule_services.TIMING_FIELDS)
        schedule_services.schedule_save(obj, timing_changed=timing_changed)

    @admin.action(description=_("Pause selected schedules"))
    def pause_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_paused(request, queryset, paused=True)

    @admin.action(description=_("Resume selected schedules"))
    def resume_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_paused(request, queryset, paused=False)

    def _set_paused(self, request: HttpRequest, queryset: QuerySet[Schedule], *, paused: bool) -> None:
        schedules = list(queryset.select_related("queue"))
        for schedule in schedules:
            schedule_services.schedule_set_paused(schedule=schedule, paused=paused)
        self.message_user(request, _("%(count)d schedule(s) updated.") % {"count": len(schedules)}, messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """A table written only by the state machine or the console: staff read it here, never edit it."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(FailureGroup)
class FailureGroupAdmin(ReadOnlyAdmin):
    # Ordered by task_failure_group_seen_idx (last_seen DESC, key).
    list_display = ("task_type", "exception", "fingerprint", "count", "first_seen", "last_seen", "example_task_id")
    ordering = ("-last_seen", "key")
    search_fields = ("key",)


@admin.register(BulkAction)
class BulkActionAdmin(ReadOnlyAdmin):
    # The audit list, newest first by the primary key.
    list_display = ("id", "action", "filters", "params", "state", "scanned", "changed", "created_by", "created_at")
    list_filter = ("action", "state")
    list_select_related = ("created_by",)
    ordering = ("-id",)
