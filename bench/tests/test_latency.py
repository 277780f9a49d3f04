from __future__ import annotations

from bench.latency import idle_rate, percentiles_ms, verdicts
from bench.report import render
from bench.tests.test_report import _results


def _run(values: list[float]) -> dict:
    return {**percentiles_ms(values), "values": values}


def test_pickups_are_summarised_in_milliseconds() -> None:
    summary = percentiles_ms([0.002] * 99 + [0.5])
    assert summary["n"] == 100
    assert summary["p50_ms"] == 2.0
    assert 2.0 < summary["p99_ms"] <= 500.0
    assert summary["max_ms"] == 500.0
    assert percentiles_ms([])["p99_ms"] is None


def test_idle_cost_is_each_workers_growth_per_second_averaged_over_the_workers() -> None:
    start = [{"statements": 10, "selects": 5, "time": 100.0}, {"statements": 0, "selects": 0, "time": 50.0}]
    end = [{"statements": 30, "selects": 15, "time": 110.0}, {"statements": 40, "selects": 10, "time": 60.0}]
    assert idle_rate(start, end) == {"statements": 3.0, "selects": 1.0}


def test_the_targets_compare_taskhub_with_celery_measured_in_the_same_run() -> None:
    measured = {
        "taskhub": {"runs": {"1": _run([0.004] * 10), "4": _run([0.006] * 10)}},
        "celery": {"runs": {"1": _run([0.002] * 10), "4": _run([0.004] * 10)}},
        "run_at": percentiles_ms([0.01] * 10),
        "idle": {"per_worker_per_second": {"statements": 2.5, "selects": 1.0}},
    }
    rows = {what: value for what, value, _, _ in verdicts(measured)}
    assert rows["pickup p50, 1 worker (ms)"] == 4.0
    assert rows["pickup p50 ÷ Celery+Redis p50, 1 worker"] == 2.0
    assert rows["pickup p50 ÷ Celery+Redis p50, 4 workers"] == 1.5
    assert rows["run_at lateness p99 (ms)"] == 10.0
    assert rows["statements per idle worker per second"] == 2.5


def test_the_report_shows_the_section_with_its_verdicts() -> None:
    results = _results({"runs": []})
    results["sections"]["latency"] = {
        "taskhub": {"runs": {"1": _run([0.004] * 10), "4": _run([0.006] * 10)}, "idle_seconds": 2.0},
        "celery": {"error": "fewer than 4 Celery workers answered"},
        "run_at": percentiles_ms([0.08] * 10),
        "idle": {
            "workers": 4,
            "window_seconds": 20,
            "per_worker_per_second": {"statements": 0.8, "selects": 0.5},
        },
    }
    text = render(results)
    assert "## 7. Latency: an idle worker starts a task" in text
    assert "| TaskHub + wake-ups | 1 | 10 | 4.0 | 4.0 | 4.0 |" in text
    assert "| Celery + Redis | – | – | error: fewer than 4 Celery workers answered | – | – |" in text
    assert "| pickup p50, 1 worker (ms) | 4.00 | ≤ 10 | met |" in text
    assert "| run_at lateness p99 (ms) | 80.00 | ≤ 50 | missed |" in text
    assert "| pickup p50 ÷ Celery+Redis p50, 1 worker | – | ≤ 2 | – |" in text
    assert "| statements per idle worker per second | 0.80 | ≤ 1 | met |" in text


def test_a_run_without_the_section_says_so() -> None:
    assert "## 7. Latency: an idle worker starts a task" in render(_results({"runs": []}))
