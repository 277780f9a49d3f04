"""Task querysets: the reusable filters every reader and the worker share."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db import models
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class TaskQuerySet(models.QuerySet):
    def visible_to(self, user: AbstractBaseUser) -> TaskQuerySet:
        """Return the tasks `user` may see: their own, or all for staff."""
        if getattr(user, "is_staff", False):
            return self
        return self.filter(owner=user)

    def owned_by(self, user: AbstractBaseUser) -> TaskQuerySet:
        """Return `user`'s own tasks."""
        return self.filter(owner=user)

    def pending(self) -> TaskQuerySet:
        return self.filter(status="pending")

    def running(self) -> TaskQuerySet:
        return self.filter(status="running")

    def active(self) -> TaskQuerySet:
        """Return tasks that are pending or running."""
        return self.filter(status__in=("pending", "running"))

    def runnable(self, now: datetime | None = None) -> TaskQuerySet:
        """Return pending tasks whose `run_at` has come."""
        return self.filter(status="pending", run_at__lte=now or timezone.now())

    def scheduled(self, now: datetime | None = None) -> TaskQuerySet:
        """Return pending tasks whose `run_at` is still in the future."""
        return self.filter(status="pending", run_at__gt=now or timezone.now())
