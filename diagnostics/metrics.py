"""Prometheus metrics that code in any app may record (exposed at /metrics).

Gauges that come from the database (queue depth, connection usage, task outcomes from the
counter tables) are computed at scrape time by collectors, not recorded here.
"""

from __future__ import annotations

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
DB_RECONNECTS = Counter("taskhub_db_reconnects_total", "Connections closed after a connection-level error.")
DB_ERRORS = Counter("taskhub_db_errors_total", "Database errors seen while serving requests or tasks.", ["kind"])
