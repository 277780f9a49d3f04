"""URL map: each app owns its slice under a fixed prefix."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.admin_login import admin_login

urlpatterns = [
    # The staff dashboard; before admin.site.urls, whose catch-all would answer first.
    path("admin/taskhub/", include("tasks.dashboard_urls")),
    # The admin's login, throttled like the API's (before admin.site.urls, which would answer first).
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/auth/", include("accounts.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Checked before tasks.urls: the DB monitor lives under /api/tasks/ for existing monitors.
    path("api/tasks/", include("diagnostics.api_urls")),
    path("api/", include("tasks.urls")),
    path("", include("diagnostics.urls")),
]

handler404 = "core.errors.json_not_found"
handler500 = "core.errors.json_server_error"
