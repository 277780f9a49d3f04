"""Each web process records, at most once a minute, the fingerprint of the JWT key it signs with."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from accounts.fingerprint import key_fingerprint
from diagnostics.models import InstanceFingerprint, InstanceRole

logger = logging.getLogger("taskhub.diagnostics")

DEFAULT_REPORT_SECONDS = 60
KEEP_DAYS = 7

_lock = threading.Lock()
_next_report_at = 0.0


def instance_record_seen(*, role: str = InstanceRole.WEB, now: datetime | None = None) -> None:
    """Insert or refresh this process's row with its key fingerprint, and forget long-gone processes."""
    now = now or timezone.now()
    fields = {"role": role, "key_fingerprint": key_fingerprint(settings.JWT_SECRET_KEY), "last_seen_at": now}
    identity = {"hostname": socket.gethostname(), "pid": os.getpid()}
    with transaction.atomic():
        if not InstanceFingerprint.objects.filter(**identity).update(**fields):
            InstanceFingerprint.objects.create(first_seen_at=now, **identity, **fields)
        InstanceFingerprint.objects.filter(last_seen_at__lt=now - timedelta(days=KEEP_DAYS)).delete()


def report_due() -> bool:
    """Return True (once per interval per process) when it is time to record this process again."""
    global _next_report_at
    interval = getattr(settings, "TASKHUB_INSTANCE_REPORT_SECONDS", DEFAULT_REPORT_SECONDS)
    if interval <= 0:
        return False
    with _lock:
        now = time.monotonic()
        if now < _next_report_at:
            return False
        # Set before writing: a failing database is retried next interval, not on every request.
        _next_report_at = now + interval
        return True


class InstanceFingerprintMiddleware:
    """After a request that used the database, record this instance's key fingerprint (throttled)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # Requests that never touched the database (liveness probes) must not start doing so.
        if connection.connection is not None and report_due():
            try:
                instance_record_seen(role=InstanceRole.WEB)
            except Exception as exc:  # a diagnostics write must never fail a request
                logger.warning("Could not record this instance's key fingerprint: %s", exc)
        return response
