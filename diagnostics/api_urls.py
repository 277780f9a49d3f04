"""Diagnostics endpoints that live under /api/tasks/ (the DB monitor)."""

urlpatterns: list = []
