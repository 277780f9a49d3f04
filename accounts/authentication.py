"""The bearer-token authentication every API endpoint uses."""

from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication


class JWTAuthentication(SimpleJWTAuthentication):
    """simplejwt's bearer authentication (TaskHub's diagnostics are layered on in this class)."""
