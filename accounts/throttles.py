"""Login throttles whose counters live in the database, so every worker and instance shares them.

The default cache is per-process memory: with N gunicorn workers a per-process throttle would
allow N times the rate, and more with each instance. A fixed-window counter row incremented with
`UPDATE … SET hits = hits + 1` is atomic on every backend and needs nothing beyond the database.
"""

from __future__ import annotations

import hashlib
import math
import time
import unicodedata
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ThrottleWindow


def clock() -> float:
    """Return the current time in seconds (a seam for tests)."""
    return time.time()


def throttle_hit(*, scope: str, ident: str, limit: int, period: int, now: float | None = None) -> int | None:
    """Count one attempt of `ident`; return the seconds to wait when it is over `limit` per `period`."""
    now = clock() if now is None else now
    window_start = int(now // period) * period
    window_end = window_start + period
    key = _window_key(scope, ident, window_start)
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


def throttle_refund(*, scope: str, ident: str, period: int, now: float) -> None:
    """Take back one attempt counted by `throttle_hit(..., now=now)` (it turned out to succeed)."""
    key = _window_key(scope, ident, int(now // period) * period)
    ThrottleWindow.objects.filter(key=key, hits__gt=0).update(hits=F("hits") - 1)


def _window_key(scope: str, ident: str, window_start: int) -> str:
    # surrogatepass: an identifier is hashed, never stored; odd text must not fail the count.
    return hashlib.sha256(f"{scope}\0{ident}\0{window_start}".encode(errors="surrogatepass")).hexdigest()


def normalise_username(username: str) -> str:
    """Return the form of `username` that every spelling the database collation deems equal shares.

    MySQL's `_ci` collations (and Django's lookups on them) compare `ｃａｒｏｌ`, `Carol`,
    `carol\u200b` and `cárol` equal to `carol`: each must count against the same account. So:
    compatibility forms folded (NFKD), accents, format characters and other default-ignorable
    code points dropped, case folded, surrounding spaces stripped.
    """
    decomposed = unicodedata.normalize("NFKD", username)
    kept = "".join(
        ch for ch in decomposed if unicodedata.category(ch) not in _IGNORED_CATEGORIES and ch not in _FILLERS
    )
    return unicodedata.normalize("NFKC", kept.casefold()).strip()[:150]


# Combining marks (accents, variation selectors), format characters (zero-width space and joiners,
# bidi controls, soft hyphen), and the Hangul fillers: default-ignorable or accent-insensitive.
_IGNORED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")


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


class LoginAccountThrottle(DatabaseRateThrottle):
    """Failed logins for one account from one client address (what django-axes counts).

    Not a DRF throttle class: it runs after the body is validated (a name that is not valid text
    is a 400, never counted), and only failures count, so a script that logs in correctly every
    few seconds is never refused. The attempt is counted up front and taken back when it
    succeeds, so parallel guesses cannot slip past the limit. Keyed on the normalised username
    (`normalise_username`) and the address: hammering a username from one address does not lock
    its owner out from every other address.
    """

    scope = "login"

    def charge(self, request: HttpRequest | Request, username: str) -> None:
        """Count an attempt at `username`; raise `Throttled` (429 with Retry-After) when over the limit."""
        self.ident = None
        if self.rate is None or not normalise_username(username):
            return
        self.ident = f"{normalise_username(username)}\0{self.get_ident(request)}"
        self.charged_at = clock()
        wait = throttle_hit(
            scope=self.scope, ident=self.ident, limit=self.num_requests, period=self.duration, now=self.charged_at
        )
        if wait is not None:
            raise Throttled(wait=wait)

    def refund(self) -> None:
        """Take the attempt back: it logged in."""
        if getattr(self, "ident", None) is not None:
            throttle_refund(scope=self.scope, ident=self.ident, period=self.duration, now=self.charged_at)
