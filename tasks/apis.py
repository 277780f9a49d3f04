"""Task and queue endpoints: validate, call one service or selector, serialize."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.db.replica import replica_read
from core.openapi import error_responses
from core.parsers import bounded_json_parser
from tasks import schedule_services, schedules, selectors, services
from tasks.errors import translated_errors
from tasks.models import QueueConfig, Schedule, TaskQueue, queue_name_validator
from tasks.pagination import TaskCursorPagination
from tasks.serializers import (
    OwnerQueueSettingsSerializer,
    QueueSerializer,
    QueueStatusSerializer,
    QueueUpdateSerializer,
    ScheduleDetailSerializer,
    ScheduleSerializer,
    ScheduleWriteSerializer,
    StatisticsQuerySerializer,
    TaskBulkCreateSerializer,
    TaskBulkResultSerializer,
    TaskCreateSerializer,
    TaskEnqueuedSerializer,
    TaskListQuerySerializer,
    TaskSerializer,
    TaskStatisticsSerializer,
)
from tasks.specs import TaskSpec

BULK_BODY_MAX_BYTES = max(8 * 1024 * 1024, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
QUEUE_NAME_PARAMETER = OpenApiParameter(
    "name", str, OpenApiParameter.PATH, pattern=queue_name_validator.regex.pattern, description="Queue name."
)


def _task_for(request: Request, pk: int) -> TaskQueue:
    """Return a task the caller may see, or 404 (another user's task does not exist for them)."""
    task = TaskQueue.objects.visible_to(request.user).select_related("queue").filter(pk=pk).first()
    if task is None:
        raise NotFound(_("Task %(id)s not found.") % {"id": pk})
    return task


def _queue_named(name: str) -> QueueConfig:
    # NotFound rather than Http404: the API's error handler gives only APIExceptions a `code`.
    queue = QueueConfig.objects.filter(name=name).first()
    if queue is None:
        raise NotFound(_("Queue not found."))
    return queue


def _enqueue_responses(body: type, *, created: str, existing: str) -> dict:
    """Document an enqueue: 201 when something was created, 200 when idempotency keys matched."""
    return {
        201: OpenApiResponse(body, description=created),
        200: OpenApiResponse(body, description=existing),
        **error_responses(400, 413, 415, 429),
    }


def _enqueue_status(created: int | bool) -> int:
    return status.HTTP_201_CREATED if created else status.HTTP_200_OK


class IsStaffOrReadOnly(permissions.BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.method in permissions.SAFE_METHODS or bool(request.user and request.user.is_staff)


class TaskListCreateApi(APIView):
    pagination_class = TaskCursorPagination

    @extend_schema(
        operation_id="tasks_list",
        parameters=[TaskListQuerySerializer],
        responses={200: TaskSerializer(many=True), **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        """List your tasks (staff: everyone's), newest first, by cursor."""
        query = TaskListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = dict(query.validated_data)
        owner = filters.pop("user", None)
        paginator = self.pagination_class()

        def page() -> list:
            tasks = selectors.task_list(user=request.user, owner=owner, **filters)
            rows = paginator.paginate_queryset(tasks, request, view=self)
            return TaskSerializer(rows, many=True, context={"request": request}).data

        return paginator.get_paginated_response(replica_read(request.user, page))

    @extend_schema(
        operation_id="tasks_create",
        request=TaskCreateSerializer,
        responses=_enqueue_responses(
            TaskEnqueuedSerializer,
            created="Created.",
            existing="The task of this idempotency key, or the active task holding this unique key (deduplicated).",
        ),
    )
    def post(self, request: Request) -> Response:
        """Enqueue a task."""
        serializer = TaskCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with translated_errors():
            result = services.task_enqueue(user=request.user, **serializer.validated_data)
        context = {"request": request, "deduplicated": {result.task.pk} if result.deduplicated else set()}
        body = TaskEnqueuedSerializer(result.task, context=context).data
        return Response(body, status=_enqueue_status(result.created))


class TaskBulkCreateApi(APIView):
    parser_classes = [bounded_json_parser(BULK_BODY_MAX_BYTES)]

    @extend_schema(
        operation_id="tasks_bulk_create",
        request=TaskBulkCreateSerializer,
        responses=_enqueue_responses(
            TaskBulkResultSerializer,
            created="At least one task was created.",
            existing="Every task existed (idempotency keys).",
        ),
    )
    def post(self, request: Request) -> Response:
        """Enqueue up to 1000 tasks at once: all are checked first, then all or none are written."""
        serializer = TaskBulkCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        specs = [TaskSpec(**item) for item in serializer.validated_data["tasks"]]
        with translated_errors(bulk=True):
            result = services.tasks_enqueue_bulk(user=request.user, specs=specs)
        body = TaskBulkResultSerializer(
            {"created": result.created, "tasks": result.tasks},
            context={"request": request, "deduplicated": result.deduplicated},
        ).data
        return Response(body, status=_enqueue_status(result.created))


class TaskDetailApi(APIView):
    @extend_schema(operation_id="tasks_retrieve", responses={200: TaskSerializer, **error_responses(404)})
    def get(self, request: Request, pk: int) -> Response:
        """Return one of your tasks."""
        return Response(TaskSerializer(_task_for(request, pk), context={"request": request}).data)


class TaskCancelApi(APIView):
    @extend_schema(
        operation_id="tasks_cancel",
        request=None,
        responses={
            200: OpenApiResponse(TaskSerializer, description="The pending task is cancelled."),
            202: OpenApiResponse(TaskSerializer, description="The running task's handler is asked to stop."),
            **error_responses(404, 409),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        """Cancel a pending task, or ask a running one to stop."""
        task = _task_for(request, pk)
        with translated_errors():
            outcome = services.task_cancel(task=task, by=request.user)
        code = status.HTTP_200_OK if outcome is services.CancelOutcome.CANCELLED else status.HTTP_202_ACCEPTED
        return Response(TaskSerializer(task, context={"request": request}).data, status=code)


class TaskRetryApi(APIView):
    @extend_schema(
        operation_id="tasks_retry", request=None, responses={200: TaskSerializer, **error_responses(404, 409)}
    )
    def post(self, request: Request, pk: int) -> Response:
        """Put a failed or cancelled task back to pending, attempts reset."""
        task = _task_for(request, pk)
        with translated_errors():
            task = services.task_retry(task=task, by=request.user)
        return Response(TaskSerializer(task, context={"request": request}).data)


class TaskStatisticsApi(APIView):
    @extend_schema(
        operation_id="tasks_statistics",
        parameters=[StatisticsQuerySerializer],
        responses={200: TaskStatisticsSerializer, **error_responses(400, 403)},
    )
    def get(self, request: Request) -> Response:
        """Counts by status and queue, throughput, failure rate and mean wait/run times."""
        query = StatisticsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        everyone = query.validated_data["scope"] == "all"
        if everyone and not request.user.is_staff:
            raise PermissionDenied(_("Only staff may ask for scope=all."))
        stats = replica_read(request.user, lambda: selectors.task_statistics(user=None if everyone else request.user))
        return Response(TaskStatisticsSerializer(stats).data)


class QueueStatusApi(APIView):
    @extend_schema(
        operation_id="tasks_queue_status", responses={200: QueueStatusSerializer(many=True), **error_responses()}
    )
    def get(self, request: Request) -> Response:
        """Every queue's state, limits, backlog and live workers."""
        statuses = replica_read(request.user, selectors.queue_statuses)
        return Response(QueueStatusSerializer(statuses, many=True).data)


class QueueListApi(APIView):
    @extend_schema(operation_id="queues_list", responses={200: QueueSerializer(many=True), **error_responses()})
    def get(self, request: Request) -> Response:
        """List the queues."""
        return Response(QueueSerializer(QueueConfig.objects.order_by("name"), many=True).data)


class QueueDetailApi(APIView):
    permission_classes = [permissions.IsAuthenticated, IsStaffOrReadOnly]

    @extend_schema(
        operation_id="queues_retrieve",
        parameters=[QUEUE_NAME_PARAMETER],
        responses={200: QueueSerializer, **error_responses(404)},
    )
    def get(self, request: Request, name: str) -> Response:
        """Return one queue."""
        return Response(QueueSerializer(_queue_named(name)).data)

    @extend_schema(
        operation_id="queues_partial_update",
        parameters=[QUEUE_NAME_PARAMETER],
        request=QueueUpdateSerializer,
        responses={200: QueueSerializer, **error_responses(400, 403, 404, 413, 415)},
    )
    def patch(self, request: Request, name: str) -> Response:
        """Staff: pause/resume a queue or change its limits."""
        queue = _queue_named(name)
        serializer = QueueUpdateSerializer(queue, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        with translated_errors():
            queue = services.queue_update(queue=queue, changes=serializer.validated_data)
        return Response(QueueSerializer(queue).data)


class OwnerQueueSettingsApi(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        operation_id="users_queue_settings_retrieve",
        responses={200: OwnerQueueSettingsSerializer, **error_responses(403, 404)},
    )
    def get(self, request: Request, user_id: int) -> Response:
        """Staff: a user's queue settings (their fair weight)."""
        found = selectors.owner_queue_settings(user=_user_with_id(user_id))
        return Response(OwnerQueueSettingsSerializer(found).data)

    @extend_schema(
        operation_id="users_queue_settings_partial_update",
        request=OwnerQueueSettingsSerializer,
        responses={200: OwnerQueueSettingsSerializer, **error_responses(400, 403, 404, 415)},
    )
    def patch(self, request: Request, user_id: int) -> Response:
        """Staff: set a user's fair weight (1 to 100 tasks per round of a fair queue's round-robin)."""
        user = _user_with_id(user_id)
        serializer = OwnerQueueSettingsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with translated_errors():
            found = services.owner_queue_settings_update(user=user, **serializer.validated_data)
        return Response(OwnerQueueSettingsSerializer(found).data)


def _user_with_id(user_id: int) -> AbstractBaseUser:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise NotFound(_("User %(id)s not found.") % {"id": user_id})
    return user


def _schedule_for(request: Request, pk: int) -> Schedule:
    """Return a schedule the caller may see, or 404 (another user's schedule does not exist for them)."""
    schedule = schedule_services.schedules_visible_to(request.user).filter(pk=pk).first()
    if schedule is None:
        raise NotFound(_("Schedule %(id)s not found.") % {"id": pk})
    return schedule


def _schedule_detail(schedule: Schedule, code: int = status.HTTP_200_OK) -> Response:
    detail = schedule_services.schedule_detail(schedule=schedule)
    return Response(ScheduleDetailSerializer(detail).data, status=code)


class ScheduleListCreateApi(APIView):
    @extend_schema(operation_id="schedules_list", responses={200: ScheduleSerializer(many=True), **error_responses()})
    def get(self, request: Request) -> Response:
        """List your schedules (staff: everyone's)."""
        rows = schedule_services.schedules_visible_to(request.user).order_by("id")
        return Response(ScheduleSerializer(rows, many=True).data)

    @extend_schema(
        operation_id="schedules_create",
        request=ScheduleWriteSerializer,
        responses={201: ScheduleDetailSerializer, **error_responses(400, 413, 415)},
    )
    def post(self, request: Request) -> Response:
        """Create a schedule: a cron expression or an interval, and the task it creates each time."""
        serializer = ScheduleWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with translated_errors():
            schedule = schedule_services.schedule_create(user=request.user, data=serializer.validated_data)
        return _schedule_detail(schedule, status.HTTP_201_CREATED)


class ScheduleDetailApi(APIView):
    @extend_schema(operation_id="schedules_retrieve", responses={200: ScheduleDetailSerializer, **error_responses(404)})
    def get(self, request: Request, pk: int) -> Response:
        """Return a schedule with its next 5 fire times and its last runs."""
        return _schedule_detail(_schedule_for(request, pk))

    @extend_schema(
        operation_id="schedules_partial_update",
        request=ScheduleWriteSerializer(partial=True),
        responses={200: ScheduleDetailSerializer, **error_responses(400, 404, 413, 415)},
    )
    def patch(self, request: Request, pk: int) -> Response:
        """Change a schedule; a new timing takes effect from now."""
        schedule = _schedule_for(request, pk)
        serializer = ScheduleWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        with translated_errors():
            schedule = schedule_services.schedule_update(schedule=schedule, changes=serializer.validated_data)
        return _schedule_detail(schedule)

    @extend_schema(operation_id="schedules_destroy", responses={204: None, **error_responses(404)})
    def delete(self, request: Request, pk: int) -> Response:
        """Delete a schedule; the tasks it created stay."""
        schedule_services.schedule_delete(schedule=_schedule_for(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SchedulePauseApi(APIView):
    paused = True

    @extend_schema(
        operation_id="schedules_pause", request=None, responses={200: ScheduleDetailSerializer, **error_responses(404)}
    )
    def post(self, request: Request, pk: int) -> Response:
        """Pause a schedule: no fire times until it is resumed."""
        schedule = schedule_services.schedule_set_paused(schedule=_schedule_for(request, pk), paused=self.paused)
        return _schedule_detail(schedule)


class ScheduleResumeApi(SchedulePauseApi):
    paused = False

    @extend_schema(
        operation_id="schedules_resume", request=None, responses={200: ScheduleDetailSerializer, **error_responses(404)}
    )
    def post(self, request: Request, pk: int) -> Response:
        """Resume a schedule: it fires from its next fire time after now (nothing missed while paused)."""
        return super().post(request, pk)


class ScheduleRunNowApi(APIView):
    @extend_schema(
        operation_id="schedules_run_now", request=None, responses={201: TaskSerializer, **error_responses(404, 429)}
    )
    def post(self, request: Request, pk: int) -> Response:
        """Create a run of the schedule now (paused or not, overlap or not)."""
        schedule = _schedule_for(request, pk)
        with translated_errors():
            task = schedules.schedule_run_now(schedule=schedule)
        return Response(TaskSerializer(task, context={"request": request}).data, status=status.HTTP_201_CREATED)
