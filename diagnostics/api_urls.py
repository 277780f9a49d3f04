"""Diagnostics endpoints that live under /api/tasks/ (the DB monitor)."""

from django.urls import re_path

from diagnostics.views import DbMonitorView

urlpatterns = [
    # The exact path existing monitors call, with or without the slash and no redirect.
    re_path(r"^db-monitor/?$", DbMonitorView.as_view(), name="db-monitor"),
]
