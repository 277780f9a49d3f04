"""Task and queue endpoints under /api/."""

from django.urls import path, re_path

from tasks import apis

urlpatterns = [
    path("tasks/", apis.TaskListCreateApi.as_view(), name="task-list"),
    path("tasks/bulk/", apis.TaskBulkCreateApi.as_view(), name="task-bulk"),
    # Existing clients and monitors call these exactly, with or without the slash: no redirect.
    re_path(r"^tasks/statistics/?$", apis.TaskStatisticsApi.as_view(), name="task-statistics"),
    re_path(r"^tasks/queue-status/?$", apis.QueueStatusApi.as_view(), name="task-queue-status"),
    path("tasks/<int:pk>/", apis.TaskDetailApi.as_view(), name="task-detail"),
    path("tasks/<int:pk>/cancel/", apis.TaskCancelApi.as_view(), name="task-cancel"),
    path("tasks/<int:pk>/retry/", apis.TaskRetryApi.as_view(), name="task-retry"),
    path("schedules/", apis.ScheduleListCreateApi.as_view(), name="schedule-list"),
    path("schedules/<int:pk>/", apis.ScheduleDetailApi.as_view(), name="schedule-detail"),
    path("schedules/<int:pk>/pause/", apis.SchedulePauseApi.as_view(), name="schedule-pause"),
    path("schedules/<int:pk>/resume/", apis.ScheduleResumeApi.as_view(), name="schedule-resume"),
    path("schedules/<int:pk>/run-now/", apis.ScheduleRunNowApi.as_view(), name="schedule-run-now"),
    path("queues/", apis.QueueListApi.as_view(), name="queue-list"),
    path("queues/<str:name>/", apis.QueueDetailApi.as_view(), name="queue-detail"),
    path("users/<int:user_id>/queue-settings/", apis.OwnerQueueSettingsApi.as_view(), name="user-queue-settings"),
]
