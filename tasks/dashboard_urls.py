"""The staff dashboard's URLs, mounted under /admin/taskhub/ (before the admin's own URLs)."""

from django.contrib import admin
from django.urls import path

from tasks import (
    console,
    console_keys,
    console_queues,
    console_schedules,
    console_search,
    console_workers,
    dashboard,
)

staff = admin.site.admin_view

urlpatterns = [
    path("dashboard/", staff(dashboard.dashboard_page), name="taskhub-dashboard"),
    path("dashboard/data/", staff(dashboard.dashboard_data), name="taskhub-dashboard-data"),
    path("dashboard/queues/<str:name>/pause/", staff(dashboard.queue_pause), name="taskhub-dashboard-pause"),
    path("dashboard/queues/<str:name>/resume/", staff(dashboard.queue_resume), name="taskhub-dashboard-resume"),
    path("dashboard/retry-failed/", staff(dashboard.failed_retry), name="taskhub-dashboard-retry"),
]

urlpatterns += [
    path("console/failures/", console.failures_page, name="taskhub-console-failures"),
    path("console/failures/data/", console.failures_data, name="taskhub-console-failures-data"),
    path("console/failures/<str:key>/tasks/", console.group_tasks, name="taskhub-console-group-tasks"),
    path("console/bulk/", console.bulk_page, name="taskhub-console-bulk"),
    path("console/bulk/data/", console.bulk_data, name="taskhub-console-bulk-data"),
    path("console/queues/", console_queues.queues_page, name="taskhub-console-queues"),
    path("console/queues/data/", console_queues.queues_data, name="taskhub-console-queues-data"),
    path("console/charts/", console_queues.charts_page, name="taskhub-console-charts"),
    path("console/charts/data/", console_queues.charts_data, name="taskhub-console-charts-data"),
]

urlpatterns += [
    path("console/workers/", console_workers.workers_page, name="taskhub-console-workers"),
    path("console/workers/data/", console_workers.workers_json, name="taskhub-console-workers-data"),
    path("console/workers/<int:pk>/drain/", console_workers.worker_drain, name="taskhub-console-worker-drain"),
    path("console/stuck/", console_workers.stuck_page, name="taskhub-console-stuck"),
    path("console/stuck/data/", console_workers.stuck_json, name="taskhub-console-stuck-data"),
    path("console/tasks/", console_search.tasks_page, name="taskhub-console-tasks"),
    path("console/tasks/data/", console_search.tasks_data, name="taskhub-console-tasks-data"),
]

urlpatterns += [
    path("console/queues/<str:name>/limits/", console_queues.queue_limits, name="taskhub-console-queue-limits"),
    path("console/schedules/", console_schedules.schedules_page, name="taskhub-console-schedules"),
    path("console/schedules/data/", console_schedules.schedules_json, name="taskhub-console-schedules-data"),
    path("console/schedules/<int:pk>/pause/", console_schedules.schedule_pause, name="taskhub-console-schedule-pause"),
    path(
        "console/schedules/<int:pk>/resume/",
        console_schedules.schedule_resume,
        name="taskhub-console-schedule-resume",
    ),
    path(
        "console/schedules/<int:pk>/run-now/",
        console_schedules.schedule_run_now,
        name="taskhub-console-schedule-run-now",
    ),
    path("console/keys/", console_keys.keys_page, name="taskhub-console-keys"),
    path("console/keys/data/", console_keys.keys_json, name="taskhub-console-keys-data"),
]
