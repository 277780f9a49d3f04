from __future__ import annotations

import pytest

from bench.config import load_config


def test_it_uses_small_sizes_and_one_repeat_in_quick_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_QUICK", "1")
    monkeypatch.delenv("BENCH_TASKS", raising=False)
    monkeypatch.delenv("BENCH_REPEATS", raising=False)
    cfg = load_config()
    assert (cfg.tasks, cfg.repeats) == (300, 1)
    assert cfg.results_path.name == "RESULTS.quick.md"


def test_it_lets_bench_tasks_override_the_task_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_QUICK", raising=False)
    monkeypatch.setenv("BENCH_TASKS", "1234")
    assert load_config().tasks == 1234


def test_it_refuses_a_redis_that_is_not_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_REDIS_URL", "redis://10.0.0.5:6379/5")
    with pytest.raises(ValueError, match="loopback"):
        load_config()


def test_it_refuses_unknown_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_ONLY", "peers,bogus")
    with pytest.raises(ValueError, match="bogus"):
        load_config()
