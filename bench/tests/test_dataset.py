from __future__ import annotations

import random
from collections import Counter

from django.utils import timezone

from bench import dataset


def _statuses(rows: int) -> Counter:
    rows_out = dataset.generate(random.Random(3), rows, [1, 2], [10, 11, 12, 13], days=90, now=timezone.now())
    return Counter(row["status"] for row in rows_out)


def test_it_keeps_the_live_set_the_same_size_whatever_the_table_size() -> None:
    small, big = _statuses(10_000), _statuses(40_000)
    for status, count in dataset.LIVE.items():
        assert small[status] == big[status] == count
    assert sum(small.values()) == 10_000 and sum(big.values()) == 40_000
    assert big["succeeded"] > 3 * small["succeeded"]


def test_a_small_data_set_gets_a_proportionally_smaller_live_set() -> None:
    statuses = _statuses(1000)
    assert statuses["pending"] + statuses["running"] == 1000 * dataset.LIVE_MAX_SHARE
    assert abs(statuses["pending"] - 2 * statuses["running"]) <= 1
