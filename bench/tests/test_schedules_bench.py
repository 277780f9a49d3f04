from __future__ import annotations

from bench.report import render
from bench.schedules_bench import lateness_summary, unique_ratio
from bench.tests.test_report import _results


def test_lateness_is_summarised_by_percentiles_against_the_target() -> None:
    summary = lateness_summary([0.1] * 98 + [0.9, 2.0], fires=100, seconds=60)
    assert summary["p50"] == 0.1
    assert 0.9 <= summary["p99"] <= 2.0
    assert summary["max"] == 2.0
    assert summary["meets_target"] is (summary["p99"] < 1.5)


def test_no_fire_time_gives_no_percentiles() -> None:
    assert lateness_summary([], fires=0, seconds=60)["p99"] is None


def test_the_unique_key_ratio_is_of_medians() -> None:
    assert unique_ratio({"plain": [100, 200, 300], "unique_key": [180, 160, 170]}) == 170 / 200
    assert unique_ratio({"plain": [], "unique_key": [1.0]}) is None


def test_the_report_shows_both_figures_and_their_verdicts() -> None:
    results = _results({"runs": []})
    results["sections"]["schedules"] = {
        "lateness": {**lateness_summary([0.2, 0.3, 0.4], fires=3, seconds=60), "backlog": 5000, "workers": 2},
        "enqueue": {
            "unit": "tasks/s",
            "rates": {"plain": [1000.0], "unique_key": [900.0]},
            "ratio": 0.9,
            "target_ratio": 0.8,
            "meets_target": True,
        },
    }
    text = render(results)
    assert "## 6. Schedules and unique tasks" in text
    assert "meets the target p99 < 1.5 s" in text
    assert "0.90× — meets the target ≥ 0.8×" in text


def test_the_report_says_why_a_part_is_missing() -> None:
    results = _results({"runs": []})
    results["sections"]["schedules"] = {"lateness": {"error": "a worker exited"}, "enqueue": {"error": "boom"}}
    text = render(results)
    assert "- Lateness: error: a worker exited" in text
    assert "- Enqueue with a unique_key: error: boom" in text
