"""Fixed log-scale histograms of wait and run seconds, as kept per queue and minute in `task_minute_stats`.

Bucket upper bounds follow a 1-2-5 series from 10 ms to 50,000 s (about 14 h), plus one bucket for
anything longer: 22 buckets, each a plain integer column, so the counters add to them in the same
upsert as the counts and any window is a SUM of columns. Between two bounds a percentile is
interpolated linearly (as Prometheus' `histogram_quantile` does), so an estimate is off by at most
the width of its bucket: under 2.5x its lower bound, and exact at the bounds.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

BOUNDS: tuple[float, ...] = tuple(
    round(mantissa * 10.0**exponent, 2) for exponent in range(-2, 5) for mantissa in (1, 2, 5)
)
BUCKETS = len(BOUNDS) + 1  # the last one has no upper bound
WAIT_COLUMNS: tuple[str, ...] = tuple(f"wait_h{index:02d}" for index in range(BUCKETS))
RUN_COLUMNS: tuple[str, ...] = tuple(f"run_h{index:02d}" for index in range(BUCKETS))
PERCENTILES = (50, 95, 99)


def bucket_of(seconds: float) -> int:
    """Return the index of the bucket that counts `seconds` (upper bounds inclusive)."""
    return bisect.bisect_left(BOUNDS, max(seconds, 0.0))


def percentile(counts: Sequence[int], q: float) -> float | None:
    """Return the estimated `q`th percentile (0-100) of a histogram's counts, or None when it is empty.

    A percentile in the open last bucket is reported as that bucket's lower bound.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q / 100.0 * total
    seen = 0
    for index, count in enumerate(counts):
        if count <= 0:
            continue
        if seen + count >= rank:
            lower = BOUNDS[index - 1] if index > 0 else 0.0
            if index >= len(BOUNDS):
                return lower
            return lower + (BOUNDS[index] - lower) * max(rank - seen, 0.0) / count
        seen += count
    return BOUNDS[-1]


def percentiles(counts: Sequence[int]) -> dict[str, float | None]:
    """Return p50, p95 and p99 of a histogram's counts."""
    return {f"p{q}": percentile(counts, q) for q in PERCENTILES}
