"""Monitoring URLs: health checks and metrics."""

from django.urls import re_path

from diagnostics.health import HealthView, QueueHealthView, liveness
from diagnostics.views import metrics_view

urlpatterns = [
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    re_path(r"^health/live/?$", liveness, name="health-live"),
    re_path(r"^health/queue/?$", QueueHealthView.as_view(), name="health-queue"),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
]
