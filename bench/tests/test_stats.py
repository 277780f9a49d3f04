from __future__ import annotations

import pytest

from bench.stats import percentile, rate, ratio, summarize


def test_it_interpolates_percentiles_between_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert percentile(values, 50) == 30.0
    assert percentile(values, 95) == pytest.approx(48.0)
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 50.0
    assert percentile([7.0], 95) == 7.0


def test_it_sorts_before_taking_a_percentile() -> None:
    assert percentile([50.0, 10.0, 40.0, 20.0, 30.0], 50) == 30.0


def test_it_refuses_an_empty_sample_or_an_out_of_range_percentile() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_it_summarizes_repeats_as_median_with_min_and_max() -> None:
    summary = summarize([300.0, 100.0, 200.0])
    assert (summary["median"], summary["min"], summary["max"], summary["n"]) == (200.0, 100.0, 300.0, 3)
    assert summarize([]) is None


def test_it_gives_no_rate_or_ratio_when_a_side_is_missing() -> None:
    assert rate(100, 4.0) == 25.0
    assert rate(100, 0.0) is None
    assert rate(100, None) is None
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(3.0, 0.0) is None
