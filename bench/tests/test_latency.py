from __future__ import annotations

from bench import latency, taskhub_side
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
            "polling_per_worker_per_second": {"statements": 3.5, "selects": 2.0},
        },
        "method": {"period_seconds": 2.5, "stagger_seconds": 0.5, "streams": 5},
    }
    text = render(results)
    assert "## 7. Latency: an idle worker starts a task" in text
    assert "| TaskHub + wake-ups | 1 | 10 | 4.0 | 4.0 | 4.0 |" in text
    assert "| Celery + Redis | – | – | error: fewer than 4 Celery workers answered | – | – |" in text
    assert "| pickup p50, 1 worker (ms) | 4.00 | ≤ 10 | met |" in text
    assert "| run_at lateness p99 (ms) | 80.00 | ≤ 50 | missed |" in text
    assert "| pickup p50 ÷ Celery+Redis p50, 1 worker | – | ≤ 2 | – |" in text
    assert "| statements per idle worker per second | 0.80 | ≤ 1 | met |" in text
    assert "each sending one task every 2.5 s at its own place, 0.5 s after the previous stream's" in text
    assert "Idle cost without wake-ups (4 polling workers, same window): 3.50 statements" in text


def test_side_by_side_streams_leave_each_worker_idle_and_never_send_together() -> None:
    assert latency.PERIOD_SECONDS - latency.STAGGER_SECONDS >= latency.IDLE_SECONDS
    places = [i * latency.STAGGER_SECONDS for i in range(latency.STREAMS)]
    assert all(b - a >= latency.STAGGER_SECONDS for a, b in zip(places, places[1:], strict=False))
    assert places[-1] + latency.STAGGER_SECONDS <= latency.PERIOD_SECONDS
    # A run_at task is enqueued between two places, never with a pickup.
    for ahead in taskhub_side.RUN_AT_AHEAD:
        between = ahead % latency.STAGGER_SECONDS
        assert 0.1 <= between <= latency.STAGGER_SECONDS - 0.1, ahead


def test_a_run_without_the_section_says_so() -> None:
    assert "## 7. Latency: an idle worker starts a task" in render(_results({"runs": []}))
