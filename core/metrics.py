"""Prometheus metrics that code in any app may record (exposed at /metrics).

Gauges that come from the database (queue depth, connection usage, task outcomes from the
counter tables) are computed at scrape time by collectors, not recorded here.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "taskhub_http_requests_total", "HTTP requests by route and status.", ["method", "route", "status"]
)
HTTP_REQUEST_DURATION = Histogram(
    "taskhub_http_request_duration_seconds", "HTTP request latency by route.", ["method", "route"]
)
AUTH_FAILURES = Counter("taskhub_auth_failures_total", "401 answers by reason code.", ["code"])
SERVICE_UNAVAILABLE = Counter("taskhub_http_503_total", "503 answers by code.", ["code"])
SESSION_DURATION = Histogram(
    "taskhub_user_session_duration_seconds",
    "Login to logout (or the end of the refresh-token family). Spurious logouts show up as short sessions.",
    buckets=(60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400),
)
DB_FORCED_ROLLBACKS = Counter(
    "taskhub_db_forced_rollbacks_total", "Connections found inside a transaction at the end of a request or task."
)
DB_SESSION_STATE_DROPS = Counter(
    "taskhub_db_session_state_drops_total",
    "Connections closed at the end of a request or task for session state left behind (locks, variables, ...).",
)
DB_RECONNECTS = Counter("taskhub_db_reconnects_total", "Connections closed after a connection-level error.")
DB_ERRORS = Counter("taskhub_db_errors_total", "Database errors seen while serving requests or tasks.", ["kind"])
REPLICA_FALLBACKS = Counter(
    "taskhub_replica_fallbacks_total",
    "Reads meant for the read replica that the primary answered because the replica could not be reached.",
)
DB_CONNECTIONS_OPENED = Counter(
    "taskhub_db_connections_opened_total", "New database connections opened (the session check ran on each)."
)
SCHEDULE_FIRES = Counter(
    "taskhub_schedule_fires_total",
    "Schedule fire times this process claimed, by outcome (fired, manual, overlap, quota, invalid, misfire_skipped).",
    ["outcome"],
)
SCHEDULE_FIRES_LOST = Counter(
    "taskhub_schedule_fires_lost_total", "Fire times another node claimed first (a duplicate key or a deadlock)."
)
SCHEDULE_LATENESS = Histogram(
    "taskhub_schedule_lateness_seconds",
    "From a schedule's fire time to its task's creation.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)
WAKEUPS = Counter(
    "taskhub_wakeups_total",
    "Worker wake-ups (Redis pub/sub) by outcome: sent; failed or skipped while Redis is away "
    "(publishing); listen_failed (a worker's subscription lost or refused).",
    ["outcome"],
)

# Clients may send any method; only these become label values, so cardinality stays bounded.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"


def route_label(request: HttpRequest) -> str:
    """Return the URL pattern that served `request` (never the raw path, which is unbounded)."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return UNMATCHED_ROUTE
    return "/" + match.route.replace("^", "").replace("$", "").replace("\\", "")


def observe_request(request: HttpRequest, status: int, seconds: float) -> None:
    """Count a finished request and record its latency under its route."""
    method = request.method if request.method in _KNOWN_METHODS else "OTHER"
    route = route_label(request)
    HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    HTTP_REQUEST_DURATION.labels(method=method, route=route).observe(seconds)


def process_counter_values() -> dict[str, Any]:
    """Return this process's DB hygiene counters (forced rollbacks, reconnects, errors by kind)."""
    errors = _by_label(DB_ERRORS, "kind")
    return {
        "forced_rollbacks": _by_label(DB_FORCED_ROLLBACKS, None).get("", 0.0),
        "reconnects": _by_label(DB_RECONNECTS, None).get("", 0.0),
        "connections_opened": _by_label(DB_CONNECTIONS_OPENED, None).get("", 0.0),
        "db_errors": sum(errors.values()),
        "db_errors_by_kind": errors,
    }


def _by_label(metric: Counter, label: str | None) -> dict[str, float]:
    """Sum a counter's `_total` samples, grouped by one label (or all under "")."""
    values: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.labels.get(label, "") if label else ""
                values[key] = values.get(key, 0.0) + sample.value
    return values
