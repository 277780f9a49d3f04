"""Task and queue endpoints: validate, call one service or selector, serialize."""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.openapi import error_responses
from core.parsers import bounded_json_parser
from tasks import selectors, services
from tasks.errors import translated_errors
from tasks.models import QueueConfig, TaskQueue, queue_name_validator
from tasks.pagination import TaskCursorPagination
from tasks.serializers import (
    QueueSerializer,
    QueueStatusSerializer,
    QueueUpdateSerializer,
    StatisticsQuerySerializer,
    TaskBulkCreateSerializer,
    TaskBulkResultSerializer,
    TaskCreateSerializer,
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
        tasks = selectors.task_list(user=request.user, owner=filters.pop("user", None), **filters)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(tasks, request, view=self)
        return paginator.get_paginated_response(TaskSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        operation_id="tasks_create",
        request=TaskCreateSerializer,
        responses=_enqueue_responses(
            TaskSerializer, created="Created.", existing="The task created earlier with this idempotency key."
        ),
    )
    def post(self, request: Request) -> Response:
        """Enqueue a task."""
        serializer = TaskCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with translated_errors():
            result = services.task_enqueue(user=request.user, **serializer.validated_data)
        return Response(
            TaskSerializer(result.task, context={"request": request}).data, status=_enqueue_status(result.created)
        )


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
            {"created": result.created, "tasks": result.tasks}, context={"request": request}
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
        stats = selectors.task_statistics(user=None if everyone else request.user)
        return Response(TaskStatisticsSerializer(stats).data)


class QueueStatusApi(APIView):
    @extend_schema(
        operation_id="tasks_queue_status", responses={200: QueueStatusSerializer(many=True), **error_responses()}
    )
    def get(self, request: Request) -> Response:
        """Every queue's state, limits, backlog and live workers."""
        return Response(QueueStatusSerializer(selectors.queue_statuses(), many=True).data)


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
