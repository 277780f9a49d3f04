"""Permissions that answer an anonymous request with 401 `token_missing`.

DRF's own `permission_denied` raises a plain `NotAuthenticated` (code `not_authenticated`);
raising `TokenMissing` from the permission gives clients the documented code instead. Views
with their own `permission_classes` should start from these.
"""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from accounts.errors import TokenMissing


class IsAuthenticated(permissions.BasePermission):
    """Allow authenticated users; anonymous requests get 401 `token_missing`."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.user and request.user.is_authenticated:
            return True
        raise TokenMissing()


class IsStaff(IsAuthenticated):
    """Allow staff users; anonymous requests get 401 `token_missing`, other users 403."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and bool(request.user.is_staff)
