"""Login throttles whose counters live in the database, so every worker and instance shares them.

The default cache is per-process memory: with N gunicorn workers a per-process throttle would
allow N times the rate, and more with each instance. A fixed-window counter row incremented with
`UPDATE … SET hits = hits + 1` is atomic on every backend and needs nothing beyond the database.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ThrottleWindow


def clock() -> float:
    """Return the current time in seconds (a seam for tests)."""
    return time.time()


def throttle_hit(*, scope: str, ident: str, limit: int, period: int) -> int | None:
    """Count one attempt of `ident`; return the seconds to wait when it is over `limit` per `period`."""
    now = clock()
    window_start = int(now // period) * period
    window_end = window_start + period
    key = hashlib.sha256(f"{scope}\0{ident}\0{window_start}".encode()).hexdigest()
    if not ThrottleWindow.objects.filter(key=key).update(hits=F("hits") + 1):
        try:
            with transaction.atomic():
                ThrottleWindow.objects.create(key=key, hits=1, expires_at=datetime.fromtimestamp(window_end, tz=UTC))
        except IntegrityError:
            # Another process created this window's row first: count on it.
            ThrottleWindow.objects.filter(key=key).update(hits=F("hits") + 1)
    hits = ThrottleWindow.objects.filter(key=key).values_list("hits", flat=True).first() or 1
    if hits <= limit:
        return None
    return max(1, math.ceil(window_end - now))


class DatabaseRateThrottle(SimpleRateThrottle):
    """DRF's rate throttle (same `DEFAULT_THROTTLE_RATES` syntax), counted in `ThrottleWindow`."""

    def get_rate(self) -> str | None:
        # Read live, not from the class attribute DRF binds at import, so settings overrides apply.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        self._wait = throttle_hit(scope=self.scope, ident=ident, limit=self.num_requests, period=self.duration)
        return self._wait is None

    def wait(self) -> int | None:
        return getattr(self, "_wait", None)


class LoginAddressThrottle(DatabaseRateThrottle):
    """Login attempts from one client address, whatever the usernames (stops password spraying)."""

    scope = "login_address"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.get_ident(request)


class LoginUserThrottle(DatabaseRateThrottle):
    """Login attempts for one username from one client address.

    Keyed on the pair, not the username alone: an attacker hammering a username from one address
    must not lock its owner out from every other address.
    """

    scope = "login"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        data = request.data
        username = data.get("username") if isinstance(data, Mapping) else None
        # The same coercion the login serializer's CharField applies (a number counts as its text).
        if isinstance(username, bool) or not isinstance(username, (str, int, float)) or not str(username).strip():
            return None
        return f"{str(username).strip().lower()[:150]}\0{self.get_ident(request)}"
