"""Pure number helpers: medians with spread, percentiles, rates and ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def summarize(values: Sequence[float]) -> dict[str, float | int | list[float]] | None:
    """Return the median, min, max and raw values of repeated measurements (None if empty)."""
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": list(values),
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """Return the `pct` percentile (0–100) of `values`, interpolating linearly between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, not {pct}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def rate(count: int, seconds: float | None) -> float | None:
    """Return `count` per second, or None when the duration is unknown or zero."""
    if seconds is None or seconds <= 0:
        return None
    return count / seconds


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return numerator/denominator, or None when either side is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def median_of(summary: dict | None) -> float | None:
    """Return the median of a `summarize()` result, tolerating a missing one."""
    return None if summary is None else summary["median"]
