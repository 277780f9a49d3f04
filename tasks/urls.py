"""Task and queue endpoints under /api/."""

urlpatterns: list = []
