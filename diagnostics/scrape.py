"""Who may scrape /metrics, and what a scrape returns (single- or multi-process)."""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.http import HttpRequest
from django.utils.translation import gettext as _
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from core import metrics
from diagnostics.collectors import DatabaseCollector

BEARER_PREFIX = "bearer "


class ScrapeRefused(Exception):
    """The caller may not read the metrics."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = {"WWW-Authenticate": 'Bearer realm="metrics"'} if status == 401 else {}


def authorize_scrape(request: HttpRequest) -> None:
    """Accept the `METRICS_TOKEN` bearer (constant-time compare) or a staff session; raise otherwise."""
    header = request.headers.get("Authorization", "")
    if header:
        token = header[len(BEARER_PREFIX) :] if header.lower().startswith(BEARER_PREFIX) else ""
        expected = settings.METRICS_TOKEN
        if expected and token and hmac.compare_digest(token.encode(), expected.encode()):
            return
        metrics.AUTH_FAILURES.labels(code="token_invalid").inc()
        raise ScrapeRefused(401, "token_invalid", _("The metrics token is not valid."))
    user = request.user
    if user.is_authenticated and user.is_staff:
        return
    if user.is_authenticated:
        raise ScrapeRefused(403, "permission_denied", _("Only staff may read the metrics."))
    metrics.AUTH_FAILURES.labels(code="token_missing").inc()
    raise ScrapeRefused(401, "token_missing", _("Send the metrics token as a bearer token, or sign in as staff."))


def render_metrics() -> tuple[bytes, str]:
    """Return the exposition text: in-process series, then the DB gauges read now.

    Under gunicorn with several worker processes, set `PROMETHEUS_MULTIPROC_DIR` (before the
    processes start): each process then writes its counters there and a scrape, answered by
    any one process, merges all of them through `MultiProcessCollector`.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        process_registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(process_registry)
    else:
        process_registry = REGISTRY
    scrape_registry = CollectorRegistry()
    scrape_registry.register(DatabaseCollector())
    return generate_latest(process_registry) + generate_latest(scrape_registry), CONTENT_TYPE_LATEST
