"""Monitoring URLs: health checks and metrics."""

urlpatterns: list = []
