"""What running instances report about themselves, for check_production to compare."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class InstanceRole(models.TextChoices):
    WEB = "web", _("web")
    WORKER = "worker", _("worker")


class InstanceFingerprint(models.Model):
    """One row per process (host + pid) that served traffic recently, with its JWT key's kid.

    Only the one-way fingerprint is stored, never the key: enough to tell that two instances
    sign with different keys (the cause of spurious 401s) without revealing either.
    """

    hostname = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("pid"))
    role = models.CharField(_("role"), max_length=16, choices=InstanceRole.choices, default=InstanceRole.WEB)
    key_fingerprint = models.CharField(_("JWT key fingerprint"), max_length=32)
    first_seen_at = models.DateTimeField(_("first seen"), default=timezone.now)
    # check_production reads the instances seen in the last minutes: WHERE last_seen_at >= ?.
    last_seen_at = models.DateTimeField(_("last seen"), default=timezone.now, db_index=True)

    class Meta:
        db_table = "diagnostics_instance"
        ordering = ["hostname", "pid"]
        verbose_name = _("instance fingerprint")
        verbose_name_plural = _("instance fingerprints")
        constraints = [models.UniqueConstraint(fields=["hostname", "pid"], name="diagnostics_instance_host_pid_uniq")]

    def __str__(self) -> str:
        return f"{self.role} {self.hostname}:{self.pid} kid={self.key_fingerprint}"
