"""Auth endpoints under /api/auth/."""

urlpatterns: list = []
