from __future__ import annotations

import pytest

from bench import httpload


@pytest.mark.parametrize(
    ("spread", "workers", "connections", "expected"),
    [
        ({1: 4, 2: 4}, 2, 8, True),
        ({1: 6, 2: 2}, 2, 8, True),
        ({1: 7, 2: 1}, 2, 8, False),
        ({1: 8}, 2, 8, False),  # one worker got every connection
        ({1: 32}, 2, 32, False),
        ({1: 20, 2: 12}, 2, 32, True),
        ({1: 3, 2: 3, 3: 2}, 4, 8, False),  # a fourth worker holds none
        ({1: 8}, 1, 8, True),
        ({}, 2, 8, False),  # nothing seen at all
    ],
)
def test_a_spread_is_balanced_when_every_worker_has_half_its_share(spread, workers, connections, expected) -> None:
    assert httpload.balanced(spread, workers=workers, connections=connections) is expected


def test_unbalanced_rounds_are_run_again_and_the_result_says_so(monkeypatch) -> None:
    spreads = iter([{1: 8}, {1: 7, 2: 1}, {1: 4, 2: 4}])
    rates = iter([700.0, 900.0, 2400.0])
    monkeypatch.setattr(httpload, "SPREAD_SAMPLE_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(httpload, "connections_per_process", lambda port: next(spreads))
    monkeypatch.setattr(httpload, "load", lambda *a, **k: {"tool": "wrk", "rps": next(rates), "non_2xx": 0})

    result = httpload.load_spread(1, "/health/live", token=None, seconds=0.01, connections=8, workers=2)

    assert result["rps"] == 2400.0
    assert result["redrawn"] == 2 and result["balanced"] is True and result["spread"] == [4, 4]


def test_redrawing_stops_after_the_last_try_and_keeps_that_round_flagged(monkeypatch) -> None:
    monkeypatch.setattr(httpload, "SPREAD_SAMPLE_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(httpload, "connections_per_process", lambda port: {1: 8})
    monkeypatch.setattr(httpload, "load", lambda *a, **k: {"tool": "wrk", "rps": 700.0, "non_2xx": 0})

    result = httpload.load_spread(1, "/health/live", token=None, seconds=0.01, connections=8, workers=2)

    assert result["redrawn"] == httpload.MAX_REDRAWS and result["balanced"] is False
