from __future__ import annotations

import pytest

from bench.capacity import backlog_size, busy_share, core_ticks, derive, parse_stat
from bench.report import render
from bench.tests.test_report import _results

BASELINE = {"seconds": 5.0, "server_cpu": 0.05}  # 1% of a core when nothing runs


def _step(workers: int, tasks: int, server_cpu: float, worker_cpu: float, pending_left: int = 1000) -> dict:
    return {"workers": workers, "seconds": 10.0, "tasks": tasks, "server_cpu": server_cpu, "worker_cpu": worker_cpu,
            "pending_left": pending_left, "failed": 0}  # fmt: skip


def _raw(steps: list[dict]) -> dict:
    method = {"window_seconds": 10.0, "settle_seconds": 3.0, "server_core": 1, "worker_core": 0,
              "worker_counts": [s["workers"] for s in steps], "version": "11.4.0-MariaDB"}  # fmt: skip
    idle = _step(4, 0, 0.1 + 0.08, 0.2, pending_left=0)
    return {"method": method, "baseline": BASELINE, "ramps": {"0.02": steps}, "idle": idle}


def _linear() -> list[dict]:
    # 40 tasks/s per worker at 2 ms of server CPU each (+ the 1% baseline); 2.5 ms of worker CPU each.
    return [_step(n, 400 * n, 0.1 + 0.8 * n, 1.0 * n) for n in (1, 2, 4, 8)]


def test_stat_lines_give_the_group_and_cpu_seconds_of_the_process_and_its_children() -> None:
    # pid (comm with spaces) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    line = "42 (python manage.py) S 1 40 40 0 -1 4194560 10 0 0 0 150 50 30 20 20 0 3 0 100 0 0"
    assert parse_stat(line, clk_tck=100) == (40, 2.5)


def test_workers_per_core_is_one_core_over_the_cost_per_task_times_a_workers_rate() -> None:
    ramp = derive(_raw(_linear()))["ramps"]["0.02"]
    assert ramp["server_ms_per_task"] == pytest.approx(2.0)
    assert ramp["tasks_per_worker_second"] == pytest.approx(40.0)
    assert ramp["workers_per_core"] == pytest.approx(1 / (0.002 * 40))  # 12.5
    assert ramp["workers_per_core_floor"] == pytest.approx(0.02 / 0.002)  # at 50 tasks/s a worker: 10
    assert ramp["server_per_worker_second"] == pytest.approx(0.08)
    assert ramp["basis_workers"] == [1, 2, 4]  # the largest step is the check, not the basis


def test_the_largest_step_checks_the_prediction_from_the_smaller_ones() -> None:
    check = derive(_raw(_linear()))["ramps"]["0.02"]["check"]
    assert check["workers"] == 8
    assert check["measured_util"] == pytest.approx(0.65)
    assert check["predicted_util_by_tasks"] == pytest.approx(0.01 + 320 * 0.002)
    assert check["predicted_util_by_workers"] == pytest.approx(0.01 + 8 * 0.08)
    assert check["ratio_by_tasks"] == pytest.approx(1.0)

    steps = _linear()
    steps[-1] = _step(8, 3200, 0.1 + 3200 * 0.003, 8.0)  # the cost per task grew by half at 8 workers
    check = derive(_raw(steps))["ramps"]["0.02"]["check"]
    assert check["ratio_by_tasks"] == pytest.approx((0.01 + 0.96) / (0.01 + 0.64))


def test_limited_steps_are_named_and_only_server_limits_leave_the_basis() -> None:
    steps = _linear()
    steps[1] = _step(2, 800, 0.1 + 1.6, 9.0)  # the workers use 90% of their core
    steps[2] = _step(4, 1000, 0.1 + 2.0, 4.0)  # 25 tasks/s a worker: behind the 40 of the best step
    steps[3] = _step(8, 3200, 0.1 + 6.4, 8.0, pending_left=0)
    ramp = derive(_raw(steps))["ramps"]["0.02"]
    assert [s["limits"] for s in ramp["steps"]] == [[], ["worker core"], ["workers fall behind"], ["backlog ran dry"]]
    assert ramp["basis_workers"] == [1, 2, 4]  # slowed workers still show what a task costs the server
    assert ramp["limited_workers"] == [2, 4, 8]
    assert ramp["check"]["limits"] == ["backlog ran dry"]

    steps[1] = {**_linear()[1], "worker_core_busy": 0.95}  # the core busy with something else
    steps[0] = _step(1, 400, 9.0, 1.0)  # the server core at 90%: its cost per task is not the normal one
    ramp = derive(_raw(steps))["ramps"]["0.02"]
    assert ramp["steps"][0]["limits"] == ["server core"]
    assert ramp["steps"][1]["limits"] == ["worker core"]
    assert ramp["basis_workers"] == [2, 4]
    assert ramp["server_ms_per_task"] == pytest.approx(2.0)

    steps[1] = _step(2, 800, 0.1 + 1.6, 2.0, pending_left=0)
    steps[2] = _step(4, 0, 0.1, 0.0)
    results = _results({"runs": []})
    results["meta"]["sections"] = ["capacity"]
    results["sections"]["capacity"] = derive(_raw(steps))
    assert results["sections"]["capacity"]["ramps"]["0.02"]["workers_per_core"] is None
    assert "- 20 ms: no step before the largest ran without a server limit: no figure." in render(results)


def test_core_ticks_count_everything_but_idle_and_iowait_as_busy() -> None:
    first = core_ticks("cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\ncpu1 5 0 5 50 0 0 0 0 0 0\nintr 1\n")
    last = core_ticks("cpu  40 0 20 150 0 0 0 0 0 0\ncpu0 35 0 15 50 0 0 0 0 0 0\ncpu1 5 0 5 90 10 0 0 0 0 0\n")
    assert first == {0: (10, 60), 1: (10, 60)}
    assert busy_share(first, last, 0) == 1.0
    assert busy_share(first, last, 1) == 0.0
    assert busy_share(first, last, 2) is None


def test_the_idle_cost_is_per_worker_second_above_the_baseline() -> None:
    idle = derive(_raw(_linear()))["idle"]
    assert idle["server_per_worker_second"] == pytest.approx(0.08 / 40)
    assert idle["workers_per_core"] == pytest.approx(500)


def test_the_backlog_covers_every_step_at_full_speed() -> None:
    assert backlog_size(0.1, (1, 2), 10.0) > 3 * (10.0 + 3.0) / 0.1


def test_the_report_renders_the_table_the_figure_and_the_check() -> None:
    results = _results({"runs": []})
    results["meta"]["sections"] = ["capacity"]
    steps = _linear()
    steps[2]["worker_core_busy"] = 0.55
    results["sections"]["capacity"] = derive(_raw(steps))
    text = render(results)
    assert "## 11. Workers per MySQL core" in text
    assert "| 4 | 160 | 40.0 | 33.0% | 2.00 | 80.0 | 40.0% | 55% | 2.50 | – |" in text
    assert "**20 ms: at least 10 workers per MySQL core**: the server spends 2.00 ms of CPU per task" in text
    assert "At the most a worker finished here (40.0 tasks/s): 12 workers per core." in text
    assert "Check at 8 workers: the server used 65.0% of its core" in text
    assert "(1.00×) and 65.0% by workers (1.00×). No step reached a limit." in text
    assert "Idle workers (4, no task, polling): 2.00 ms of server CPU per worker-second" in text


def test_a_run_without_the_section_renders_without_it() -> None:
    results = _results({"runs": []})
    results["meta"]["sections"] = ["peers"]
    assert "## 11. Workers per MySQL core" not in render(results)  # FINDINGS.md, appended, may name it
