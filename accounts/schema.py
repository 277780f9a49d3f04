"""OpenAPI: describe TaskHub's bearer authentication as drf-spectacular does simplejwt's."""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class TaskHubJWTScheme(SimpleJWTScheme):
    target_class = "accounts.authentication.JWTAuthentication"
