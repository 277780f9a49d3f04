"""Auth endpoints under /api/auth/."""

from django.urls import path

from accounts import apis

urlpatterns = [
    path("token/", apis.LoginApi.as_view(), name="auth-token"),
    path("token/refresh/", apis.RefreshApi.as_view(), name="auth-token-refresh"),
    path("token/verify/", apis.VerifyApi.as_view(), name="auth-token-verify"),
    path("logout/", apis.LogoutApi.as_view(), name="auth-logout"),
    path("me/", apis.MeApi.as_view(), name="auth-me"),
]
