from __future__ import annotations

from bench.fairness_bench import CLAIM_BATCH, drain_ratio, wait_summary
from bench.report import render
from bench.tests.test_report import _results


def test_the_wait_is_the_worst_of_the_small_users_tasks() -> None:
    summary = wait_summary([{"tasks_before": 5, "ms": 40.0}, {"tasks_before": 31, "ms": 12.0}], expected=10)
    assert (summary["started"], summary["p100_tasks_before"], summary["p100_ms"]) == (2, 31, 40.0)
    assert summary["p100_batches"] == 31 / CLAIM_BATCH
    assert wait_summary([], expected=10)["p100_tasks_before"] is None


def test_the_drain_ratio_is_of_medians() -> None:
    assert drain_ratio({"owner": [90, 80, 100], "none": [100, 120, 110]}) == 90 / 110
    assert drain_ratio({"owner": [], "none": [1.0]}) is None


def test_the_report_shows_the_waits_the_drain_and_their_verdicts() -> None:
    results = _results({"runs": []})
    results["sections"]["fairness"] = {
        "wait": {
            "claim_batch": 20,
            "target_batches": 2,
            "modes": {
                "owner": {**wait_summary([{"tasks_before": 20, "ms": 35.0}], expected=1), "backlog": 20000},
                "none": {**wait_summary([{"tasks_before": 19990, "ms": 9000.0}], expected=1), "backlog": 20000},
            },
        },
        "drain": {
            "unit": "tasks/s",
            "owners": 100,
            "workers": 2,
            "rates": {"owner": [900.0], "none": [1000.0]},
            "ratio": 0.9,
            "target_ratio": 0.8,
            "meets_target": True,
        },
    }
    text = render(results)
    assert "## 8. Fair scheduling between users" in text
    assert "p100 wait 20 tasks started before them (1.0 batches), 35 ms — meets the target ≤ 2 claim batches" in text
    assert "fairness=none: user B's 1 tasks behind user A's 20,000" in text
    assert "0.90× — meets the target ≥ 0.8×" in text


def test_the_report_says_why_a_part_is_missing() -> None:
    results = _results({"runs": []})
    results["sections"]["fairness"] = {"wait": {"error": "worker died"}, "drain": {"error": "boom"}}
    text = render(results)
    assert "- Wait of a small user: error: worker died" in text
    assert "- Drain with fairness=owner: error: boom" in text
