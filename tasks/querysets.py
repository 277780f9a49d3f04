"""Task querysets: the read filters that views, selectors, health checks and the claim share."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db import models
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class TaskQuerySet(models.QuerySet):
    """Reads only: every write of a task's state is a function of `tasks.transitions`."""

    def visible_to(self, user: AbstractBaseUser) -> TaskQuerySet:
        """Return the tasks `user` may see: their own, or all for staff."""
        if getattr(user, "is_staff", False):
            return self
        return self.filter(owner=user)

    def runnable(self, now: datetime | None = None) -> TaskQuerySet:
        """Return pending tasks whose `run_at` has come."""
        return self.filter(status="pending", run_at__lte=now or timezone.now())
