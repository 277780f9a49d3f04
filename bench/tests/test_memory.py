from __future__ import annotations

import pytest

from bench.memory import growth

MB = 2**20


def test_it_measures_growth_from_warm_up_to_the_last_sample_taken_while_tasks_ran() -> None:
    samples = [(0.0, 0, 100 * MB), (0.5, 500, 120 * MB), (1.0, 900, 126 * MB), (1.5, 1000, 60 * MB)]
    result = growth(samples, warmup=400, total=1000)
    assert (result["warm_tasks"], result["end_tasks"]) == (500, 900)
    assert result["growth_pct"] == pytest.approx(5.0)
    assert result["peak_rss_mb"] == 126


def test_it_says_so_when_no_sample_came_after_the_warm_up() -> None:
    assert "error" in growth([(0.0, 10, 100 * MB)], warmup=400, total=1000)
