"""The staff dashboard's URLs, mounted under /admin/taskhub/ (before the admin's own URLs)."""

from django.contrib import admin
from django.urls import path

from tasks import dashboard

staff = admin.site.admin_view

urlpatterns = [
    path("dashboard/", staff(dashboard.dashboard_page), name="taskhub-dashboard"),
    path("dashboard/data/", staff(dashboard.dashboard_data), name="taskhub-dashboard-data"),
    path("dashboard/queues/<str:name>/pause/", staff(dashboard.queue_pause), name="taskhub-dashboard-pause"),
    path("dashboard/queues/<str:name>/resume/", staff(dashboard.queue_resume), name="taskhub-dashboard-resume"),
    path("dashboard/retry-failed/", staff(dashboard.failed_retry), name="taskhub-dashboard-retry"),
]
