from __future__ import annotations

import pytest

from bench.cluster_bench import summarize_cluster
from bench.report import CLUSTER_RATIO, render, targets
from bench.tests.test_report import _results


def _phase(rate: float, ms: list[float] | None = None, where: str = "replica") -> dict:
    found: dict = {"tasks": 1000, "succeeded": 1000, "rate": rate, "span_seconds": 1000 / rate}
    if ms is not None:
        found["statistics"] = {"ms": ms, "answers": {f"200 {where}": len(ms)}}
    return found


def _window(primary_rows: int, replica_rows: int) -> dict:
    def counts(rows: int, statements: int) -> dict:
        return {
            "selects": statements,
            "statements": statements + 10,
            "rows_read": {"task_status_count": rows, "task_hourly_stats": 0, "task_queue": 0},
        }

    return {"requests": 100, "answers": {"200 replica": 100}, "primary": counts(primary_rows, 200),
            "replica": counts(replica_rows, 400)}  # fmt: skip


def _raw() -> dict:
    return {
        "tasks": 1000,
        "poll_rate": 20.0,
        "setup_seconds": 30.0,
        "seconds": 120.0,
        "rounds": [
            {"idle": _phase(500), "primary": _phase(400, [10, 20, 30], "primary"), "replica": _phase(440, [5, 6, 7])},
            {"idle": _phase(520), "primary": _phase(420, [12, 18], "primary"), "replica": _phase(400, [8, 100])},
        ],
        "statements": {"replica": _window(0, 900), "primary": _window(900, 0)},
    }


def test_the_ratio_is_of_the_median_rates_replica_over_primary() -> None:
    found = summarize_cluster(_raw())
    assert found["rates"] == {"idle": [500, 520], "primary": [400, 420], "replica": [440, 400]}
    assert found["ratio"] == 420 / 410
    assert found["ratio_per_round"] == [440 / 400, 400 / 420]
    assert found["meets_target"] is True


def test_the_statistics_latencies_are_pooled_over_the_rounds() -> None:
    polled = summarize_cluster(_raw())["statistics"]
    assert polled["replica"]["requests"] == 5
    assert polled["replica"]["p50_ms"] == 7
    assert polled["replica"]["p95_ms"] == pytest.approx(81.6)
    assert polled["primary"]["answers"] == {"200 primary": 5}


def test_a_failed_drain_counts_no_rate_and_misses_the_target() -> None:
    raw = _raw()
    raw["rounds"][0]["replica"]["rate"] = None
    raw["rounds"][1]["replica"]["rate"] = 300
    found = summarize_cluster(raw)
    assert found["rates"]["replica"] == [300]
    assert found["ratio"] == 300 / 410
    assert found["meets_target"] is False


def test_the_report_shows_the_cluster_figures_and_the_target() -> None:
    results = _results({"runs": []})
    results["meta"]["sections"] = ["cluster"]
    results["sections"]["cluster"] = summarize_cluster(_raw())
    text = render(results)
    assert "## 9. Many hosts on one MariaDB" in text
    assert "- Drain, 2 web × 2 worker hosts: 510/s (500–520) with nobody polling the statistics." in text
    assert (
        "from the primary (routing off) 410/s (400–420), from the replica (routing on) 420/s (400–440): 1.02×" in text
    )
    assert "Statistics from the replica while the primary drains: p50 7.0 ms, p95 81.6 ms over 5 requests" in text
    assert "routing on, 100 requests: the primary read 0 rows of those tables" in text
    assert "routing off, 100 requests: the primary read 900 rows of those tables" in text
    [row] = [row for row in targets(results) if row[0] == CLUSTER_RATIO]
    assert row[1:] == (420 / 410, 1.0, True)


def test_a_run_without_the_section_renders_as_before() -> None:
    results = _results({"runs": []})
    results["meta"]["sections"] = ["peers"]
    assert "Many hosts" not in render(results)
    results["meta"]["sections"] = ["cluster"]
    results["sections"]["cluster"] = {"error": "the cluster rig failed (timed out)"}
    assert "## 9. Many hosts on one MariaDB\n\nerror: the cluster rig failed (timed out)" in render(results)
