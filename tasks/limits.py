"""A queue's rate limit: its text form ("100/s", "600/m"), and the token bucket that enforces it.

Pure functions only: the bucket's state lives in `queue_rate_bucket` rows, read and written by
the claim (`tasks.fair_claim`) while it holds the queue's row lock, so every worker of the fleet
draws from the same bucket.

Why a token bucket and not a fixed window: a fixed window lets twice the limit through around a
window's edge (the end of one, the start of the next); a bucket bounds the starts in *any*
window of T seconds by `burst + rate * T`. The bucket holds at most `burst` tokens — a fifth of
a second's worth of the rate, at least one — so a queue idle for an hour starts no more than
that at once, and the starts over a run stay within a few percent of the rate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

RATE_LIMIT_MAX_LENGTH = 32
RATE_COUNT_MAX = 1_000_000
# Seconds of the rate the bucket holds: the most a queue starts at once after being idle.
BURST_SECONDS = 0.2
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d{1,7})\s*/\s*(\d{0,5})\s*([smhd])\s*$")


@dataclass(frozen=True)
class Rate:
    """`count` task starts per `seconds`."""

    count: int
    seconds: int

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def burst(self) -> int:
        """The bucket's size: at most this many starts at once after an idle spell."""
        return max(1, math.ceil(self.per_second * BURST_SECONDS))


def parse_rate(text: str) -> Rate | None:
    """Return the rate `text` names ("100/s", "600/m", "5/10s"), None when empty; ValueError when malformed."""
    if not text:
        return None
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"not a rate: {text!r}")
    count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
    if not 1 <= count <= RATE_COUNT_MAX or multiple < 1:
        raise ValueError(f"out of range: {text!r}")
    return Rate(count=count, seconds=multiple * UNIT_SECONDS[unit])


def validate_rate_limit(value: str) -> None:
    """Django validator of QueueConfig.rate_limit."""
    try:
        parse_rate(value)
    except ValueError:
        raise ValidationError(
            _(
                'A rate like "100/s", "600/m" or "5/10s": 1 to %(max)d task starts per second (s), '
                "minute (m), hour (h) or day (d); empty = no limit."
            ),
            code="invalid_rate",
            params={"max": RATE_COUNT_MAX},
        ) from None


def refill(tokens: float, refilled_at: datetime, now: datetime, rate: Rate) -> tuple[float, datetime]:
    """Return the bucket's tokens at `now` and the moment they are counted to.

    A clock behind the bucket's (another host's, a moment earlier) adds nothing and never moves
    the bucket back in time.
    """
    elapsed = max((now - refilled_at).total_seconds(), 0.0)
    return min(float(rate.burst), tokens + elapsed * rate.per_second), max(refilled_at, now)


def seconds_to_next_token(tokens: float, rate: Rate) -> float:
    """Return how long until a bucket holding `tokens` (< 1) has a whole token again."""
    return max(1.0 - tokens, 0.0) / rate.per_second
