"""Admin: simplejwt's token records, without the refresh token strings themselves."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from rest_framework_simplejwt.token_blacklist.admin import OutstandingTokenAdmin
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken


class TokenHiddenOutstandingTokenAdmin(OutstandingTokenAdmin):
    """simplejwt's read-only view minus the `token` column: a live refresh token is a credential."""

    exclude = ("token",)

    def get_readonly_fields(self, *args: Any, **kwargs: Any) -> list[str]:
        return [name for name in super().get_readonly_fields(*args, **kwargs) if name != "token"]


admin.site.unregister(OutstandingToken)
admin.site.register(OutstandingToken, TokenHiddenOutstandingTokenAdmin)
