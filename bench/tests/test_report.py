from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import compare
from bench.report import add_summaries, render, shortcut_rows, shortcut_verdicts, summarize_runs, targets
from bench.report import main as report_main
from bench.scale import CONSOLE_ENDPOINTS, ENDPOINTS


def _runs(label: str, drains: list[float], enqueue: float, enqueue_label: str = "per task") -> list[dict]:
    return [{"label": label, "drain_rate": d, "enqueue_label": enqueue_label, "enqueue_rate": enqueue} for d in drains]


def _results(taskhub: dict) -> dict:
    return {
        "meta": {
            "date": "2026-01-01T00:00:00+00:00",
            "quick": False,
            "tasks": 5000,
            "repeats": 3,
            "duration_seconds": 60.0,
            "json_name": "results.json",
        },
        "machine": {"cpu_model": "CPU", "cores": 2, "ram_gib": 24, "kernel": "6", "loadavg": [0.1, 0.1, 0.1]},
        "versions": {"Python": "3.11"},
        "sections": {
            "peers": {
                "django-tasks-db": {"runs": _runs("2 workers", [400, 460, 500], 800)},
                "celery": {"runs": _runs("2×c1", [800, 820, 900], 1000)},
                "raw": {"runs": _runs("2 workers", [2900, 3000, 3100], 20000, "multi-row INSERT")},
            },
            "taskhub": taskhub,
            "auth": {"unavailable": "auth skipped: the time budget (BENCH_BUDGET_SECONDS) is spent"},
        },
        "errors": [],
    }


def _spread(median: float, low: float, high: float) -> dict:
    return {"median": median, "min": low, "max": high, "n": 3, "values": []}


def _auth_entry(rps: dict[str, dict], ratio: float, round_ratios: dict, **extra) -> dict:
    """An auth section as bench.auth writes it: one rate summary per endpoint, and its ratios."""
    return {
        "liveness_path": "/health/live",
        "auth_path": "/api/auth/me/",
        "server": "gunicorn -c gunicorn.conf.py (gthread), 2 workers × 4 threads",
        "tool": "wrk",
        "connections": 8,
        "rps": rps,
        "non_2xx": dict.fromkeys(rps, 0),
        "ratio": ratio,
        "round_ratios": round_ratios,
        **extra,
    }


def test_it_groups_repeated_runs_into_medians_by_label() -> None:
    summary = summarize_runs(_runs("1 worker", [3.0, 1.0, 2.0], 10.0))
    assert summary["drain"]["1 worker"]["median"] == 2.0
    assert summary["enqueue"]["per task"]["n"] == 3


def test_it_reports_ratios_of_taskhub_to_the_peers_measured_in_the_same_run() -> None:
    results = _results({"runs": _runs("2 workers", [1800, 1840, 1900], 1380, "per-task")})
    add_summaries(results)
    measured = {what: value for what, value, _, _ in targets(results)}
    assert measured["TaskHub drain, 2 workers ÷ django-tasks-db 2 workers"] == 1840 / 460
    assert measured["TaskHub drain, 2 workers ÷ Celery+Redis 2×c1"] == 1840 / 820
    assert measured["TaskHub enqueue per task (service) ÷ django-tasks-db .enqueue()"] == 1380 / 800
    text = render(results)
    assert "| TaskHub drain, 2 workers ÷ django-tasks-db 2 workers | 4.00 | ≥ 2 | met |" in text
    assert "1,840/s (1,800–1,900)" in text


def test_it_says_why_a_section_did_not_run_instead_of_a_number() -> None:
    results = _results({"error": "TaskHub workers succeeded 4990 of 5000 tasks"})
    text = render(results)
    assert "error: TaskHub workers succeeded 4990 of 5000 tasks" in text
    assert "auth skipped: the time budget (BENCH_BUDGET_SECONDS) is spent" in text
    assert "| TaskHub drain, 2 workers ÷ django-tasks-db 2 workers | – | ≥ 2 | – |" in text


def test_it_reports_the_auth_ratio_of_medians_over_interleaved_rounds() -> None:
    results = _results({"runs": _runs("2 workers", [1800], 1380, "per-task")})
    rps = {"liveness": _spread(2000.0, 1900.0, 2100.0), "authenticated": _spread(1500.0, 1400.0, 1550.0)}
    results["sections"]["auth"] = _auth_entry(rps, 0.75, _spread(0.74, 0.7, 0.78))
    text = render(results)
    assert "| authenticated ÷ liveness requests/s | 0.75 | ≥ 0.75 | met |" in text
    assert "| `/api/auth/me/` (bearer JWT) | 1,500 (1,400–1,550) | 0 |" in text
    assert "per round: 0.74 (0.70–0.78)" in text
    assert "one database read" not in text  # a run from before the reference endpoint existed


def test_it_shows_the_one_read_reference_next_to_the_auth_ratio() -> None:
    results = _results({"runs": _runs("2 workers", [1800], 1380, "per-task")})
    rps = {
        "liveness": _spread(2000.0, 1900.0, 2100.0),
        "one_read": _spread(1200.0, 1100.0, 1300.0),
        "authenticated": _spread(1000.0, 900.0, 1100.0),
    }
    results["sections"]["auth"] = _auth_entry(
        rps,
        0.5,
        _spread(0.5, 0.45, 0.55),
        one_read_path="/bench/one-read",
        one_read_ratio=0.6,
        one_read_round_ratios=_spread(0.6, 0.55, 0.65),
        auth_vs_one_read=0.83,
    )
    text = render(results)
    assert "| `/bench/one-read` (reference: no auth, one database read) | 1,200 (1,100–1,300) | 0 |" in text
    assert "One read ÷ liveness: 0.60 (per round: 0.60 (0.55–0.65))" in text
    assert "Authenticated ÷ one read: 0.83." in text
    assert "| authenticated ÷ liveness requests/s | 0.50 | ≥ 0.75 | missed |" in text


def test_it_puts_the_ratios_of_an_earlier_run_next_to_this_runs(tmp_path: Path) -> None:
    earlier = _results({"runs": _runs("2 workers", [900], 500, "per-task")})
    earlier["meta"]["json_name"] = "results-before.json"
    (tmp_path / "before.json").write_text(json.dumps(earlier))
    results = _results({"runs": _runs("2 workers", [1840], 1380, "per-task")})
    results["before"] = compare.load_before(tmp_path / "before.json", "the product before the fixes")
    text = render(results)
    before = (tmp_path / "before.json").as_posix()
    assert f"Before: the product before the fixes — run 2026-01-01T00:00:00+00:00 (`{before}`" in text
    assert "| TaskHub drain, 2 workers ÷ django-tasks-db 2 workers | 1.96 | 4.00 | ≥ 2 |" in text
    assert "| TaskHub enqueue per task (service) ÷ django-tasks-db .enqueue() | 0.62 | 1.73 | ≥ 1.5 |" in text


def test_it_ends_with_the_findings_written_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    findings = tmp_path / "FINDINGS.md"
    findings.write_text("## Findings\n\nThe claim scan steps over delete-marked index entries.\n")
    monkeypatch.setattr(compare, "FINDINGS", findings)
    text = render(_results({"runs": _runs("2 workers", [1840], 1380, "per-task")}))
    assert text.rstrip().endswith("The claim scan steps over delete-marked index entries.")


def test_it_shows_what_a_bigger_live_backlog_costs_apart_from_the_table_size() -> None:
    def http(p95: float) -> dict:
        return {name: {"p50_ms": p95 - 1, "p95_ms": p95} for name in ENDPOINTS}

    results = _results({"runs": _runs("2 workers", [1840], 1380, "per-task")})
    results["sections"]["scale"] = {
        "sizes": [
            {"rows": 10_000, "label": "10k", "table_rows": 10_000, "live_tasks": 300, "load": {}, "http": http(10.0)},
            {
                "rows": 1_000_000,
                "label": "1M",
                "table_rows": 1_000_000,
                "live_tasks": 300,
                "load": {"reused": True},
                "http": http(12.0),
                "claim": {"rate": 2000.0, "rates": [2100.0, 2000.0, 1500.0]},
                "backlog": {"live": 30_000, "http": http(30.0)},
            },
        ]
    }
    text = render(results)
    assert "| p95 queue-status: 1M ÷ 10k | 1.20 | ≤ 2 | met |" in text
    assert "| 2,000/s (1,500–2,100) |" in text  # the median drain, and the spread of the drains
    assert "| 1,000,000, 30,000 of them live | – | 29.0 / 30.0 | 29.0 / 30.0 | 29.0 / 30.0 | – |" in text
    assert "Every size has the same live set (300 pending and running tasks)" in text
    assert "queue-status 3.00×" in text


def test_the_console_feeds_are_judged_on_their_p95_growth_from_the_smallest_to_the_largest_size() -> None:
    def feeds(p95: float, slow: float | None = None) -> dict:
        times = {name: {"p50_ms": p95 - 1, "p95_ms": p95} for name in CONSOLE_ENDPOINTS}
        if slow is not None:
            times["console: stuck"] = {"p50_ms": slow, "p95_ms": slow}
        return times

    def http(p95: float) -> dict:
        return {name: {"p50_ms": p95 - 1, "p95_ms": p95} for name in ENDPOINTS}

    results = _results({"runs": _runs("2 workers", [1840], 1380, "per-task")})
    results["sections"]["scale"] = {
        "sizes": [
            {
                "rows": 10_000,
                "label": "10k",
                "table_rows": 10_000,
                "live_tasks": 300,
                "load": {},
                "http": http(4.0),
                "console": feeds(4.0),
            },
            {
                "rows": 1_000_000,
                "label": "1M",
                "table_rows": 1_000_000,
                "live_tasks": 300,
                "load": {},
                "http": http(6.0),
                "console": feeds(6.0, slow=9.0),
                "backlog": {"live": 30_000, "http": http(7.5), "console": feeds(7.5)},
            },
        ]
    }
    text = render(results)
    assert "| feed | p95 at 10k | p95 at 1M | 1M ÷ 10k | verdict | p95 at 1M, 30,000 live |" in text
    assert "| queues | 4.0 | 6.0 | 1.50× | meets | 7.5 |" in text
    assert "| stuck | 4.0 | 9.0 | 2.25× | misses | 7.5 |" in text
    # A run from before the console was measured renders no such table.
    for size in results["sections"]["scale"]["sizes"]:
        size.pop("console")
    assert "| feed |" not in render(results)


def test_the_console_under_load_is_judged_on_the_drain_beside_the_bulk_retry_over_the_drain_alone() -> None:
    results = _results({"runs": _runs("2 workers", [1840], 1380, "per-task")})
    results["meta"]["sections"] = ["console"]
    beside = {"rate": 3000.0, "bulk_changed": 100_000, "bulk_changed_when_drained": 21_000}
    beside |= {"bulk_rate": 4000.0, "bulk_covered_drain": True}
    results["sections"]["console"] = {
        "drain_tasks": 20_000,
        "bulk_tasks": 100_000,
        "rounds": [{"rep": 0, "alone": {"rate": 4000.0}, "beside": beside}],
        "alone": {"median": 4000.0, "min": 4000.0, "max": 4000.0, "n": 1},
        "beside": {"median": 3000.0, "min": 3000.0, "max": 3000.0, "n": 1},
        "ratio": 0.75,
        "target_ratio": 0.7,
    }
    text = render(results)
    assert "- Drain alone: 4,000/s; beside the bulk retry: 3,000/s: 0.75× — meets the target ≥ 0.7×." in text
    assert (
        "retried 21,000 tasks during the drain and 100,000 in all, 4,000/s (still running when the drain ended)" in text
    )
    results["sections"]["console"]["ratio"] = 0.5
    assert "0.50× — misses the target" in render(results)


def test_it_reports_the_bulk_enqueue_service_against_the_same_peer() -> None:
    runs = _runs("1 worker", [1500], 900, "per-task") + _runs("2 workers", [1800], 6400, "bulk")
    results = _results({"runs": runs})
    add_summaries(results)
    measured = {what: value for what, value, _, _ in targets(results)}
    assert measured["TaskHub enqueue per task (service) ÷ django-tasks-db .enqueue()"] == 900 / 800
    assert measured["TaskHub enqueue, bulk service ÷ django-tasks-db .enqueue()"] == 6400 / 800
    assert (
        "| TaskHub enqueue, bulk service ÷ django-tasks-db .enqueue() | 8.00 | ≥ 1.5 "
        "| reference: 500 tasks a call against one a call |" in render(results)
    )


def test_it_says_how_many_auth_rounds_were_redrawn_for_an_unbalanced_spread() -> None:
    results = _results({"runs": _runs("2 workers", [1800], 1380, "per-task")})
    rate = _spread(1000.0, 900.0, 1100.0)
    results["sections"]["auth"] = _auth_entry(
        {"liveness": rate, "authenticated": rate}, 1.0, _spread(1.0, 1.0, 1.0), max_redraws=4, redrawn=2, unbalanced=0
    )
    assert "was run again (2 time(s) in this run; 0 round(s) still unbalanced after 4 tries)" in render(results)


def test_a_saved_run_is_re_rendered_next_to_an_earlier_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    earlier = _results({"runs": _runs("2 workers", [900], 500, "per-task")})
    (tmp_path / "before.json").write_text(json.dumps(earlier))
    (tmp_path / "run.json").write_text(json.dumps(_results({"runs": _runs("2 workers", [1840], 1380, "per-task")})))
    monkeypatch.setenv("BENCH_BEFORE", str(tmp_path / "before.json"))
    monkeypatch.setenv("BENCH_BEFORE_LABEL", "the product before")

    report_main([str(tmp_path / "run.json"), str(tmp_path / "RESULTS.md")])

    text = (tmp_path / "RESULTS.md").read_text()
    # Both runs are cited where they lie (a committed run: bench/runs/...).
    assert (
        f"Before: the product before — run 2026-01-01T00:00:00+00:00 (`{(tmp_path / 'before.json').as_posix()}`" in text
    )
    assert f"raw numbers in `{(tmp_path / 'run.json').as_posix()}`" in text
    assert "| TaskHub drain, 2 workers ÷ django-tasks-db 2 workers | 1.96 | 4.00 | ≥ 2 |" in text


def _shortcuts_entry(rates: dict[str, dict[str, list[float]]], **extra) -> dict:
    """A shortcuts section as bench.shortcuts writes it: rates per measure and variant, round by round.

    A saved run names the shortcuts it judged and on what, so these four (two of them retired
    since) render whatever the shortcuts of today are.
    """
    return {
        "measures": {measure: {"unit": "/s", "rates": by_variant} for measure, by_variant in rates.items()},
        "judged_on": {
            "reply_flags": ["auth", "drain"],
            "user_lookup": ["auth"],
            "me_serializer": ["auth"],
            "raw_task_sql": ["enqueue", "bulk", "drain"],
        },
        "keep_gain_pct": 10.0,
        "auth_path": "/api/auth/me/",
        "tasks": 5000,
        "drain_workers": 2,
        **extra,
    }


def _ab_rates() -> dict[str, dict[str, list[float]]]:
    return {
        "auth": {
            "all": [1000.0, 1100.0, 1050.0],
            "reply_flags": [990.0, 1080.0, 1000.0],
            "user_lookup": [700.0, 720.0, 710.0],
            "me_serializer": [1000.0, 1060.0, 1040.0],
        },
        "enqueue": {"all": [400.0, 420.0, 410.0], "raw_task_sql": [300.0, 320.0, 310.0]},
        "drain": {
            "all": [2000.0, 2100.0, 2050.0],
            "raw_task_sql": [1950.0, 2000.0, 2000.0],
            "reply_flags": [1990.0] * 3,
        },
    }


def test_each_shortcut_is_judged_on_the_gain_of_its_own_measure_in_the_same_run() -> None:
    rows = {(row["shortcut"], row["measure"]): row for row in shortcut_rows(_shortcuts_entry(_ab_rates()))}

    assert rows[("user_lookup", "auth")]["gain_pct"] == pytest.approx((1050 / 710 - 1) * 100)
    assert rows[("user_lookup", "auth")]["verdict"] == "keep"
    assert rows[("reply_flags", "auth")]["gain_pct"] == pytest.approx((1050 / 1000 - 1) * 100)
    assert rows[("reply_flags", "auth")]["verdict"] == "drop"  # +5 % does not pay for internals
    assert rows[("raw_task_sql", "drain")]["verdict"] == "drop"
    assert rows[("raw_task_sql", "enqueue")]["verdict"] == "keep"
    # Per round: each round of the variant against the same round of "all".
    gains = rows[("user_lookup", "auth")]["round_gains"]
    assert (gains["min"], gains["max"]) == pytest.approx(((1000 / 700 - 1) * 100, (1100 / 720 - 1) * 100))


def test_a_shortcut_stays_when_any_of_its_measures_gains_enough() -> None:
    verdicts = shortcut_verdicts(shortcut_rows(_shortcuts_entry(_ab_rates())))

    assert verdicts == {
        "reply_flags": "drop",  # auth +5 %, drain +3 %: under 10 % on every measure of its path
        "user_lookup": "keep",
        "me_serializer": "drop",  # auth +1.0 %
        "raw_task_sql": "keep",  # enqueue +32.3 %, even though the drain gains only 2.5 %
    }


def test_the_ab_table_shows_on_off_gain_and_verdict_with_the_per_round_spread() -> None:
    results = _results({"runs": _runs("2 workers", [1800], 1380, "per-task")})
    results["sections"]["shortcuts"] = _shortcuts_entry(_ab_rates())
    text = render(results)

    assert "## 5. Shortcuts A/B" in text
    assert "| shortcut | measure | on (all) | off (this one) | gain | verdict |" in text
    assert (
        "| `user_lookup` | `/api/auth/me/` requests/s | 1,050 (1,000–1,100) | 710 (700–720) | +47.9 % (+42.9 to +52.8) | keep |"
        in text
    )
    assert "| `raw_task_sql` | enqueue per task (service), tasks/s | 410 (400–420) | 310 (300–320) | +32.3 %" in text
    assert "| `raw_task_sql` | drain of 5,000 no-op tasks, 2 workers, tasks/s |" in text
    assert "| `reply_flags` | `/api/auth/me/` requests/s | 1,050 (1,000–1,100) | 1,000 (990–1,080) | +5.0 %" in text
    assert "Keep: `user_lookup`, `raw_task_sql`." in text
    assert "Drop (the plain version stays): `reply_flags`, `me_serializer`." in text


def test_a_saved_run_with_a_shortcut_judged_on_no_measure_shows_it_unmeasured_and_dropped() -> None:
    results = _results({"runs": _runs("2 workers", [1800], 1380, "per-task")})
    entry = _shortcuts_entry(_ab_rates())
    entry["judged_on"]["retired_shortcut"] = []
    results["sections"]["shortcuts"] = entry
    text = render(results)

    assert (
        "| `retired_shortcut` | – (no hot path: it runs only after a leaked transaction) | – | – | – | drop |" in text
    )
    assert "Drop (the plain version stays): `reply_flags`, `me_serializer`, `retired_shortcut`." in text


def test_a_measure_that_could_not_run_leaves_its_shortcuts_undecided() -> None:
    rates = _ab_rates()
    del rates["enqueue"]
    rates["auth"]["reply_flags"] = [800.0, 900.0, 850.0]  # +23.5 % on auth, its drain not measured
    entry = _shortcuts_entry(rates)
    entry["measures"]["enqueue"] = {"error": "enqueue-all exited 1"}
    entry["measures"]["drain"] = {"unavailable": "shortcuts drain A/B skipped: the time budget is spent"}
    results = _results({"runs": _runs("2 workers", [1800], 1380, "per-task")})
    results["sections"]["shortcuts"] = entry
    text = render(results)

    assert "| `raw_task_sql` | enqueue per task (service), tasks/s | – | – | – | – |" in text
    assert "Not measured in this run: `raw_task_sql`." in text
    assert "- enqueue per task (service), tasks/s: error: enqueue-all exited 1" in text
    assert "skipped: the time budget is spent" in text
    assert "`reply_flags`" in text.split("Keep:")[1].split("Drop")[0]  # its auth gain still counts


def test_a_run_without_the_section_says_so() -> None:
    text = render(_results({"runs": _runs("2 workers", [1800], 1380, "per-task")}))
    assert "## 5. Shortcuts A/B\n\nnot run" in text


@pytest.mark.parametrize(
    ("before", "after", "higher", "pct", "verdict"),
    [
        (1.0, 0.95, True, -5.0, "no regression"),
        (1.0, 0.85, True, -15.0, "regressed"),
        (1.0, 1.20, True, 20.0, "no regression"),
        # lower is better (p95 ratios): 1.0 → 1.25 is 20 % worse
        (1.0, 1.25, False, -20.0, "regressed"),
        (2.0, 1.0, False, 100.0, "no regression"),
        (None, 1.0, True, None, "–"),
    ],
)
def test_the_before_and_after_table_signs_changes_so_that_plus_is_better(before, after, higher, pct, verdict) -> None:
    got = compare.change_pct(before, after, higher=higher)
    assert got == pytest.approx(pct) if pct is not None else got is None
    assert compare.regression_verdict(got) == verdict


def test_a_measure_worse_by_more_than_ten_percent_is_called_a_regression_in_the_report() -> None:
    results = _results({"runs": _runs("2 workers", [1800, 1840, 1900], 1380, "per-task")})
    add_summaries(results)
    now = targets(results)
    drain = "TaskHub drain, 2 workers ÷ django-tasks-db 2 workers"
    measured = dict((what, value) for what, value, _, _ in now)
    results["before"] = {
        "label": "earlier",
        "date": "2025-12-31",
        "json_name": "x.json",
        "loadavg": [0, 0, 0],
        "targets": [[drain, measured[drain] * 1.2]],  # before was 20 % better
    }
    text = "\n".join(compare.before_after(results, now))
    assert f"| {drain} | {measured[drain] * 1.2:.2f} | {measured[drain]:.2f} | ≥ 2 | -16.7 % | regressed |" in text


def test_the_backlog_rows_are_targets_with_their_verdicts() -> None:
    http = {name: {"p95_ms": 10.0} for name in ENDPOINTS}
    small = {"label": "10k", "table_rows": 10_000, "http": http, "claim": {"rate": 1000.0}}
    backlog = {name: {"p95_ms": 15.0} for name in ENDPOINTS}
    backlog["queue-status"] = {"p95_ms": 50.0}
    big = {"label": "1M", "table_rows": 10**6, "http": http, "claim": {"rate": 900.0}}
    big["backlog"] = {"live": 30_000, "http": backlog}
    results = _results({"runs": _runs("2 workers", [1800], 1380, "per-task")})
    results["sections"]["scale"] = {"sizes": [small, big]}
    text = render(results)
    assert "| p95 statistics (own): 1M with 3% of it live ÷ 10k | 1.50 | ≤ 2 | met |" in text
    assert "| p95 queue-status: 1M with 3% of it live ÷ 10k | 5.00 | ≤ 2 | missed |" in text


def test_the_auth_section_shows_the_undrawn_ratio_beside_the_redrawn_one() -> None:
    from bench.auth import undrawn_ratio

    loads = {
        "liveness": [{"rps": 2000.0, "first_rps": 1000.0}, {"rps": 2000.0, "first_rps": 2000.0}],
        "authenticated": [{"rps": 1000.0, "first_rps": 1000.0}, {"rps": 1000.0}],
    }
    assert undrawn_ratio(loads) == pytest.approx(1000.0 / 1500.0)
    rps = {name: _spread(v, v, v) for name, v in (("liveness", 2000.0), ("authenticated", 1000.0))}
    results = _results({"runs": _runs("2 workers", [1800], 1380, "per-task")})
    results["sections"]["auth"] = _auth_entry(rps, 0.5, _spread(0.5, 0.5, 0.5), undrawn_ratio=0.67, redrawn=1)
    assert "as if none had been redrawn: 0.67" in render(results)


def test_over_same_hour_pairs_a_measure_is_judged_on_the_median_of_the_pairs_changes() -> None:
    drain, p95 = "drain ÷ raw", "p95 statistics: 1M ÷ 10k"
    now = [(drain, 0.5, 0.5, True), (p95, 1.0, 2.0, False), ("only in this run", 1.0, 1.0, True)]

    def pair(drain_before, drain_after, p95_before=None, p95_after=None) -> dict:
        side = {"date": "2026-01-01", "raw_path": "bench/runs/x.json"}
        return {
            "before": {**side, "targets": {drain: drain_before, p95: p95_before}},
            "after": {**side, "targets": {drain: drain_after, p95: p95_after}},
        }

    results = {
        "pairs": [
            pair(0.50, 0.40, 1.0, 1.3),  # -20 %, and p95 30 % higher: -23.1 %
            pair(0.50, 0.51, None, 1.0),  # +2 %, p95 unknown in this pair
            pair(0.50, 0.47, 1.0, 1.0),  # -6 %, p95 unchanged
        ]
    }
    text = "\n".join(compare.over_pairs(results, now))
    assert "| measure | pair 1 | pair 2 | pair 3 | median | |" in text
    assert f"| {drain} | -20.0 % | +2.0 % | -6.0 % | -6.0 % | no regression |" in text  # one pair alone: regressed
    assert f"| {p95} | -23.1 % | – | +0.0 % | -11.5 % | regressed |" in text  # the median of the two known
    assert "only in this run" not in text
    assert compare.over_pairs({}, now) == []
