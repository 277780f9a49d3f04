"""Turn a run's raw results (bench/out/*.json) into RESULTS.md: figures, ratios, targets, context.

`python -m bench.report bench/out/latest.json [RESULTS.md]` re-renders a saved run;
`python -m bench.report --published` re-renders every committed report from the committed runs
that `bench/runs/published.json` names.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

from bench import capacity, compare, latency
from bench.scale import BACKLOG_SHARE, CONSOLE_ENDPOINTS, ENDPOINTS
from bench.stats import median_of, ratio, summarize

PEERS = (("django-tasks-db", "django-tasks-db"), ("celery", "Celery + Redis"), ("raw", "raw SQL ceiling"))
BULK_ENQUEUE = "TaskHub enqueue, bulk service ÷ django-tasks-db .enqueue()"
CLUSTER_RATIO = "2 web × 2 worker hosts: drain with statistics from the replica ÷ from the primary"
# Rows that compare unlike things: shown for reference, with no verdict.
REFERENCES = {BULK_ENQUEUE: "reference: 500 tasks a call against one a call"}


def summarize_runs(runs: list[dict]) -> dict:
    """Group repeated runs by label: {"drain": {label: summary}, "enqueue": {label: summary}}."""
    drain, enqueue = defaultdict(list), defaultdict(list)
    for run in runs:
        if run.get("drain_rate") is not None:
            drain[run["label"]].append(run["drain_rate"])
        if run.get("enqueue_rate") is not None:
            enqueue[run.get("enqueue_label", "per task")].append(run["enqueue_rate"])
    return {
        "drain": {k: summarize(v) for k, v in drain.items()},
        "enqueue": {k: summarize(v) for k, v in enqueue.items()},
    }


def add_summaries(results: dict) -> None:
    """Add a "summary" next to every list of throughput runs, in place."""
    sections = results.get("sections", {})
    djtasks = sections.get("djtasks", {})
    for entry in [*sections.get("peers", {}).values(), sections.get("taskhub", {}), *djtasks.values()]:
        if isinstance(entry, dict) and "runs" in entry:
            entry["summary"] = summarize_runs(entry["runs"])


def _spread(summary: dict | None, unit: str = "/s", digits: int = 0) -> str:
    if not summary:
        return "–"
    fmt = f"{{:,.{digits}f}}"
    if summary["n"] == 1:
        return fmt.format(summary["median"]) + unit
    return f"{fmt.format(summary['median'])}{unit} ({fmt.format(summary['min'])}–{fmt.format(summary['max'])})"


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _status(entry: dict | None) -> str | None:
    """Return why a section or peer has no figures, or None if it has."""
    if not entry:
        return "not run"
    if isinstance(entry.get("unavailable"), str):
        return entry["unavailable"]
    if "error" in entry:
        return f"error: {entry['error']}"
    return None


def _throughput(results: dict) -> list[str]:
    sections = results["sections"]
    lines = ["## 1. Worker throughput", ""]
    n = results["meta"]["tasks"]
    lines += [
        f"{n:,} no-op tasks per run, {results['meta']['repeats']} repetition(s); median (min–max). The queue is "
        "refilled before every drain, so each enqueue rate is the median of all its fills. Drain = tasks ÷ "
        "(last finish − first start), from the systems' own timestamps.",
        "",
    ]
    lines += ["| system | enqueue | enqueue rate | drain | drain rate |", "|---|---|---|---|---|"]
    entries = [(sections.get("peers", {}).get(key), title) for key, title in PEERS]
    entries.append((sections.get("taskhub"), "TaskHub"))
    for entry, title in entries:
        problem = _status(entry)
        if problem:
            lines.append(f"| {title} | – | {problem} | – | – |")
            continue
        summary = entry.get("summary") or summarize_runs(entry["runs"])
        enq, drain = list(summary["enqueue"].items()), list(summary["drain"].items())
        for i in range(max(len(enq), len(drain), 1)):
            e_label, e_sum = enq[i] if i < len(enq) else ("", None)
            d_label, d_sum = drain[i] if i < len(drain) else ("", None)
            lines.append(f"| {title if i == 0 else ''} | {e_label} | {_spread(e_sum)} | {d_label} | {_spread(d_sum)} |")
    return lines + [""]


def _djtasks(results: dict) -> list[str]:
    entry, lines = _heading(results, "djtasks", "1b. Django tasks: TaskHubBackend vs django-tasks-db")
    if entry is None:
        return lines
    lines += [
        f"{results['meta']['tasks']:,} `@task` no-ops per run (`bench/peers/djtasks_tasks.py`, the same code on both "
        "backends), enqueued with `.enqueue()` one call each, drained by two workers: `run_worker --burst` vs "
        "`db_worker --batch`. Median (min–max).",
        "",
        "| backend | `.enqueue()` per task | drain, 2 workers |",
        "|---|---|---|",
    ]
    medians = {}
    for key, title in (("taskhub", "TaskHubBackend"), ("django-tasks-db", "django-tasks-db")):
        runs = entry.get(key) or {}
        if "runs" not in runs:
            lines.append(f"| {title} | – | – |")
            continue
        summary = runs.get("summary") or summarize_runs(runs["runs"])
        enq, drain = summary["enqueue"].get("per task"), summary["drain"].get("2 workers")
        medians[key] = (median_of(enq), median_of(drain))
        lines.append(f"| {title} | {_spread(enq)} | {_spread(drain)} |")
    if len(medians) == 2:
        (th_enq, th_drain), (dt_enq, dt_drain) = medians["taskhub"], medians["django-tasks-db"]
        lines += [
            "",
            f"Ratios, TaskHub ÷ django-tasks-db: enqueue {_num(ratio(th_enq, dt_enq))}×, "
            f"drain {_num(ratio(th_drain, dt_drain))}×.",
        ]
    return lines + [""]


def _median(results: dict, peer: str | None, kind: str, label: str) -> float | None:
    """Return the median `kind` ("drain"/"enqueue") rate of `label` for a peer, or TaskHub when peer is None."""
    sections = results["sections"]
    entry = sections.get("taskhub") if peer is None else sections.get("peers", {}).get(peer)
    if not entry or "runs" not in entry:
        return None
    summary = entry.get("summary") or summarize_runs(entry["runs"])
    return median_of(summary[kind].get(label))


def targets(results: dict) -> list[tuple[str, float | None, float, bool]]:
    """Return (what, measured ratio, target, higher_is_better) for every target of issue 8."""
    th2 = _median(results, None, "drain", "2 workers")
    rows = [
        (
            "TaskHub drain, 2 workers ÷ django-tasks-db 2 workers",
            ratio(th2, _median(results, "django-tasks-db", "drain", "2 workers")),
            2.0,
            True,
        ),
        (
            "TaskHub drain, 2 workers ÷ Celery+Redis 2×c1",
            ratio(th2, _median(results, "celery", "drain", "2×c1")),
            1.0,
            True,
        ),
        (
            "TaskHub drain, 2 workers ÷ raw SQL ceiling 2 workers",
            ratio(th2, _median(results, "raw", "drain", "2 workers")),
            0.5,
            True,
        ),
    ]
    peer_enqueue = _median(results, "django-tasks-db", "enqueue", "per task")
    # The issue welcomes a bulk enqueue "if it is what gets there": both paths are reported.
    for label, what in (
        ("per-task", "TaskHub enqueue per task (service) ÷ django-tasks-db .enqueue()"),
        ("bulk", BULK_ENQUEUE),
    ):
        rows.append((what, ratio(_median(results, None, "enqueue", label), peer_enqueue), 1.5, True))
    scale = results["sections"].get("scale") or {}
    sizes = scale.get("sizes", [])
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        for name in ENDPOINTS:
            p95 = [s.get("http", {}).get(name, {}).get("p95_ms") for s in (big, small)]
            rows.append((f"p95 {name}: {big['label']} ÷ {small['label']}", ratio(*p95), 2.0, False))
        claims = [s.get("claim", {}).get("rate") for s in (big, small)]
        rows.append((f"claim+complete rate: {big['label']} ÷ {small['label']}", ratio(*claims), 0.8, True))
        backlog = (big.get("backlog") or {}).get("http") or {}
        for name in ENDPOINTS:
            p95 = [backlog.get(name, {}).get("p95_ms"), small.get("http", {}).get(name, {}).get("p95_ms")]
            what = f"p95 {name}: {big['label']} with {BACKLOG_SHARE:.0%} of it live ÷ {small['label']}"
            rows.append((what, ratio(*p95), 2.0, False))
    auth = results["sections"].get("auth") or {}
    rows.append(("authenticated ÷ liveness requests/s", auth.get("ratio"), 0.75, True))
    memory = results["sections"].get("memory") or {}
    rows.append(("worker RSS growth after warm-up (%)", memory.get("growth_pct"), 10.0, False))
    cluster = results["sections"].get("cluster") or {}
    if "ratio" in cluster:
        rows.append((CLUSTER_RATIO, cluster["ratio"], cluster["target_ratio"], True))
    return rows


def _targets_table(results: dict) -> list[str]:
    lines = ["## Ratios and the targets of issue 8", "", "| measure | measured | target | |", "|---|---|---|---|"]
    for what, value, target, higher in targets(results):
        sign = "≥" if higher else ("<" if "(%)" in what else "≤")
        verdict = "–" if value is None else ("met" if (value >= target if higher else value <= target) else "missed")
        verdict = REFERENCES.get(what, verdict)
        lines.append(f"| {what} | {_num(value)} | {sign} {target:g} | {verdict} |")
    return lines + ["", "A ratio is – when either side could not be measured in this run (see the sections).", ""]


def _scale(results: dict) -> list[str]:
    entry, lines = _heading(results, "scale", "2. Statistics and queue status at scale")
    if entry is None:
        return lines
    lines += ["p50 / p95 in ms over HTTP (gunicorn, sequential requests after warm-up).", ""]
    head = "| rows | load | statistics (own) | statistics ?scope=all | queue-status | claim+complete |"
    lines += [head, "|---|---|---|---|---|---|"]
    for size in entry["sizes"]:
        load = size.get("load", {})
        load_text = "reused" if load.get("reused") else f"{_num(load.get('total_seconds'), '{:.1f}')} s"
        http = size.get("http", {})
        claim = size.get("claim", {})
        claim_text = _num(claim.get("rate"), "{:,.0f}/s") if "rate" in claim else "error"
        if len(claim.get("rates", [])) > 1:
            claim_text += f" ({_num(min(claim['rates']), '{:,.0f}')}–{_num(max(claim['rates']), '{:,.0f}')})"
        lines.append(f"| {size['table_rows']:,} | {load_text} | {' | '.join(_latencies(http))} | {claim_text} |")
        backlog = size.get("backlog") or {}
        if "http" in backlog:
            cells = " | ".join(_latencies(backlog["http"]))
            lines.append(f"| {size['table_rows']:,}, {backlog['live']:,} of them live | – | {cells} | – |")
    lines.append("")
    lines += _backlog_note(entry["sizes"])
    lines += _console(entry["sizes"])
    for size in entry["sizes"]:
        for part in ("http", "console", "claim", "backlog"):
            info = size.get(part, {})
            if "error" in info:
                lines.append(f"- {size['label']} {part}: error: {info['error']}")
    return lines + [""]


CONSOLE_RATIO_TARGET = 2.0


def _console(sizes: list[dict]) -> list[str]:
    """The console's JSON feeds: p95 at each size, largest ÷ smallest (target ≤ 2), and with the grown live set."""
    if not any("console" in size for size in sizes):
        return []
    first, last = sizes[0], sizes[-1]
    backlog = (last.get("backlog") or {}).get("console") or {}
    live = (last.get("backlog") or {}).get("live")
    head = ["feed", *(f"p95 at {size['label']}" for size in sizes), f"{last['label']} ÷ {first['label']}", "verdict"]
    if backlog:
        head.append(f"p95 at {last['label']}, {live:,} live")
    lines = [
        "The operator console's JSON feeds (docs/CONSOLE.md), read with a staff session on the same data "
        f"sets, in ms. Target: p95 at {last['label']} ≤ {CONSOLE_RATIO_TARGET:g} × p95 at {first['label']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name in CONSOLE_ENDPOINTS:
        p95s = [(size.get("console") or {}).get(name, {}).get("p95_ms") for size in sizes]
        growth = ratio(p95s[-1], p95s[0])
        verdict = "–" if growth is None else ("meets" if growth <= CONSOLE_RATIO_TARGET else "misses")
        cells = [name.removeprefix("console: "), *(_num(p, "{:.1f}") for p in p95s), f"{_num(growth)}×", verdict]
        if backlog:
            cells.append(_num(backlog.get(name, {}).get("p95_ms"), "{:.1f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _latencies(http: dict) -> list[str]:
    """Return "p50 / p95" of each endpoint, or "error"."""
    if "error" in http:
        return ["error"] * len(ENDPOINTS)
    return [
        f"{_num(http.get(n, {}).get('p50_ms'), '{:.1f}')} / {_num(http.get(n, {}).get('p95_ms'), '{:.1f}')}"
        for n in ENDPOINTS
    ]


def _backlog_note(sizes: list[dict]) -> list[str]:
    """Say how the largest size's p95 moved when its live set grew, against the smallest size."""
    backlog = (sizes[-1].get("backlog") or {}) if sizes else {}
    if "http" not in backlog or len(sizes) < 2:
        return []
    small = sizes[0].get("http", {})
    ratios = ", ".join(
        f"{name} {_num(ratio(backlog['http'].get(name, {}).get('p95_ms'), small.get(name, {}).get('p95_ms')))}×"
        for name in ENDPOINTS
    )
    return [
        f"Every size has the same live set ({sizes[0].get('live_tasks', '–')} pending and running tasks): "
        "history grows, the backlog does not. The last row grows the largest size's live set to "
        f"{backlog['live']:,} tasks; its p95 ÷ the {sizes[0]['label']} p95: {ratios}. Live tasks are counted "
        "through the index ranges of live rows alone, so that cost follows the backlog, not the table.",
        "",
    ]


def _heading(results: dict, key: str, title: str) -> tuple[dict | None, list[str]]:
    """Return a section's entry and heading lines; the entry is None (and the reason shown) if it has no figures."""
    entry = results["sections"].get(key)
    problem = _status(entry)
    lines = [f"## {title}", ""]
    return (None, [*lines, problem, ""]) if problem else (entry, lines)


def _auth(results: dict) -> list[str]:
    entry, lines = _heading(results, "auth", "3. Auth overhead")
    if entry is None:
        return lines
    rps, bad = entry["rps"], entry["non_2xx"]
    lines += [
        f"{entry['server']}; load generator: {entry['tool']}, {entry['connections']} connections; the "
        "endpoints loaded in turn, median (min–max) over the rounds.",
        *(
            [
                "",
                "gunicorn's workers share one listening socket and each connection stays with the worker that "
                "accepted it: a round in which a worker held less than half its share of the connections "
                f"measured one process, not the server, and was run again ({entry['redrawn']} time(s) in this "
                f"run; {entry.get('unbalanced', 0)} round(s) still unbalanced after {entry.get('max_redraws')} tries).",
            ]
            if "redrawn" in entry
            else []
        ),
        "",
        "| endpoint | requests/s | non-2xx |",
        "|---|---|---|",
        f"| `{entry['liveness_path']}` (no auth, no database) | {_spread(rps['liveness'], '')} | {bad['liveness']} |",
        *(
            [
                f"| `{entry['one_read_path']}` (reference: no auth, one database read) "
                f"| {_spread(rps['one_read'], '')} | {bad.get('one_read', 0)} |"
            ]
            if "one_read" in rps
            else []
        ),
        f"| `{entry['auth_path']}` (bearer JWT) | {_spread(rps['authenticated'], '')} | {bad['authenticated']} |",
        "",
        f"Authenticated ÷ liveness: **{_num(entry['ratio'])}** (per round: {_spread(entry.get('round_ratios'), '', 2)}"
        + (
            f"; from each round's first draw, as if none had been redrawn: {_num(entry['undrawn_ratio'])})."
            if "undrawn_ratio" in entry
            else "; this run did not keep its first draws)."
        ),
    ]
    if "one_read" in rps:
        lines += [
            "",
            f"One read ÷ liveness: {_num(entry['one_read_ratio'])} (per round: "
            f"{_spread(entry.get('one_read_round_ratios'), '', 2)}) — what one database round trip per request "
            "costs by itself, the least an endpoint that reads its user from the database on each request "
            f"(the design's rule) can cost. Authenticated ÷ one read: {_num(entry['auth_vs_one_read'])}.",
        ]
    return lines + [""]


def _memory(results: dict) -> list[str]:
    entry, lines = _heading(results, "memory", "4. Worker memory")
    if entry is None:
        return lines
    lines += [
        f"One `run_worker --burst` draining {entry['tasks']:,} echo tasks, RSS sampled every 0.5 s.",
        "",
        f"- RSS after {_num(entry.get('warm_tasks'), '{:,}')} tasks: {_num(entry.get('warm_rss_mb'), '{:.1f}')} MiB",
        f"- RSS at the end ({_num(entry.get('end_tasks'), '{:,}')} tasks): {_num(entry.get('end_rss_mb'), '{:.1f}')} MiB",
        f"- peak: {_num(entry.get('peak_rss_mb'), '{:.1f}')} MiB; growth after warm-up: "
        f"**{_num(entry.get('growth_pct'), '{:.1f}')} %**",
    ]
    return lines + [""]


def shortcut_rows(entry: dict) -> list[dict]:
    """Return one row per shortcut and measure it is judged on: on/off medians, gain in %, verdict.

    The gain is of the medians (on ÷ off − 1); `round_gains` pairs each round of the shortcut's
    variant with the same round of `all`. A shortcut judged on no measure gets one row, unmeasured.
    """
    keep_at = entry.get("keep_gain_pct", 10.0)
    rows = []
    for name, measures in entry["judged_on"].items():
        if not measures:
            rows.append({"shortcut": name, "measure": None, "gain_pct": None, "verdict": "drop"})
            continue
        for measure in measures:
            rates = entry["measures"].get(measure, {}).get("rates", {})
            on, off = summarize(rates.get("all", [])), summarize(rates.get(name, []))
            gain = ratio(median_of(on), median_of(off))
            paired = zip(rates.get("all", []), rates.get(name, []), strict=False)
            round_gains = [(r - 1) * 100 for a, b in paired if (r := ratio(a, b)) is not None]
            gain_pct = None if gain is None else (gain - 1) * 100
            verdict = "–" if gain_pct is None else ("keep" if gain_pct >= keep_at else "drop")
            rows.append(
                {
                    "shortcut": name,
                    "measure": measure,
                    "on": on,
                    "off": off,
                    "gain_pct": gain_pct,
                    "round_gains": summarize(round_gains),
                    "verdict": verdict,
                }
            )
    return rows


def shortcut_verdicts(rows: list[dict]) -> dict[str, str]:
    """Return keep / drop / – per shortcut: kept when any of its measures gains enough, – while one is missing."""
    verdicts: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        verdicts[row["shortcut"]].append(row["verdict"])
    return {name: "keep" if "keep" in seen else ("–" if "–" in seen else "drop") for name, seen in verdicts.items()}


def _shortcuts(results: dict) -> list[str]:
    entry, lines = _heading(results, "shortcuts", "5. Shortcuts A/B")
    if entry is None:
        return lines
    keep_at = entry.get("keep_gain_pct", 10.0)
    measure_names = {
        "auth": f"`{entry.get('auth_path', '/api/auth/me/')}` requests/s",
        "enqueue": "enqueue per task (service), tasks/s",
        "bulk": f"bulk enqueue ({entry.get('bulk_chunk', 500)} a call), tasks/s",
        "drain": f"drain of {entry.get('tasks', 0):,} no-op tasks, {entry.get('drain_workers', 2)} workers, tasks/s",
    }
    lines += [
        "Each shortcut into library internals (core/shortcuts.py) against its plain version, in this run: "
        "TaskHub's processes with every shortcut on (`TASKHUB_SHORTCUTS=all`) and with all but that one, "
        "the variants of a measure loaded in turn round after round. On and off are medians (min–max); the "
        "gain is on ÷ off − 1 of the medians, per round in brackets. A shortcut stays only if it buys "
        f"≥ {keep_at:g} % on a measure of its path.",
        "",
        "| shortcut | measure | on (all) | off (this one) | gain | verdict |",
        "|---|---|---|---|---|---|",
    ]
    rows = shortcut_rows(entry)
    for row in rows:
        if row["measure"] is None:
            lines.append(
                f"| `{row['shortcut']}` | – (no hot path: it runs only after a leaked transaction) | – | – | – | drop |"
            )
            continue
        gain = "–" if row["gain_pct"] is None else f"{row['gain_pct']:+.1f} %"
        if row["gain_pct"] is not None and row["round_gains"] and row["round_gains"]["n"] > 1:
            gain += f" ({row['round_gains']['min']:+.1f} to {row['round_gains']['max']:+.1f})"
        lines.append(
            f"| `{row['shortcut']}` | {measure_names.get(row['measure'], row['measure'])} | {_spread(row['on'], '')} "
            f"| {_spread(row['off'], '')} | {gain} | {row['verdict']} |"
        )
    verdicts = shortcut_verdicts(rows)
    kept = [name for name, verdict in verdicts.items() if verdict == "keep"]
    dropped = [name for name, verdict in verdicts.items() if verdict == "drop"]
    undecided = [name for name, verdict in verdicts.items() if verdict == "–"]
    lines += [
        "",
        f"Keep: {', '.join(f'`{n}`' for n in kept) or 'none'}. Drop (the plain version stays): "
        f"{', '.join(f'`{n}`' for n in dropped) or 'none'}."
        + (f" Not measured in this run: {', '.join(f'`{n}`' for n in undecided)}." if undecided else ""),
    ]
    for measure, measured in entry["measures"].items():
        problem = _status(measured)
        if problem:
            lines.append(f"- {measure_names.get(measure, measure)}: {problem}")
        elif measured.get("non_2xx") and any(measured["non_2xx"].values()):
            bad = ", ".join(f"{_variant(name)}: {n}" for name, n in measured["non_2xx"].items() if n)
            lines.append(f"- {measure_names.get(measure, measure)}: non-2xx answers ({bad})")
    return lines + [""]


def _schedules(results: dict) -> list[str]:
    entry, lines = _heading(results, "schedules", "6. Schedules and unique tasks")
    if entry is None:
        return lines
    late, enq = entry.get("lateness") or {}, entry.get("enqueue") or {}
    problem = _status(late)
    if problem:
        lines.append(f"- Lateness: {problem}")
    elif late.get("p99") is None:
        lines.append("- Lateness: no fire time created a task")
    else:
        verdict = "meets" if late["meets_target"] else "misses"
        lines.append(
            f"- Lateness of an every-second schedule (fire time → task created) over {late['window_seconds']:.0f} s, "
            f"{late['workers']} workers busy on a {late['backlog']:,}-task backlog: p50 {late['p50']:.3f} s, "
            f"p99 {late['p99']:.3f} s, max {late['max']:.3f} s, {late['fires']} fire times — {verdict} the "
            f"target p99 < {late['target_p99']:g} s."
        )
    problem = _status(enq)
    if problem:
        lines.append(f"- Enqueue with a unique_key: {problem}")
    else:
        plain, unique = summarize(enq["rates"].get("plain", [])), summarize(enq["rates"].get("unique_key", []))
        verdict = "meets" if enq["meets_target"] else "misses"
        lines.append(
            f"- Enqueue per task (service): plain {_spread(plain)}, with a unique_key {_spread(unique)}: "
            f"{_num(enq['ratio'])}× — {verdict} the target ≥ {enq['target_ratio']:g}×."
        )
    return lines + [""]


def _latency(results: dict) -> list[str]:
    entry, lines = _heading(results, "latency", "7. Latency: an idle worker starts a task")
    if entry is None:
        return lines
    pickup = entry.get("taskhub") or {}
    lines += [
        f"Pickup = enqueue → start of a no-op sent after {pickup.get('idle_seconds', latency.IDLE_SECONDS):g} s "
        "of idleness, one at a time; TaskHub workers with Redis wake-ups (`TASKHUB_WAKEUP_URL`, default poll "
        "interval), Celery prefork `--concurrency 1` on the same Redis. In ms. "
        + _side_by_side(entry.get("method") or {}),
        "",
        "| system | workers | tasks | p50 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for key, title in (("taskhub", "TaskHub + wake-ups"), ("celery", "Celery + Redis")):
        part = entry.get(key) or {}
        problem = _status(part)
        if problem:
            lines.append(f"| {title} | – | – | {problem} | – | – |")
            continue
        for workers, run in part.get("runs", {}).items():
            lines.append(
                f"| {title} | {workers} | {run['n']} | {_num(run['p50_ms'], '{:.1f}')} | "
                f"{_num(run['p99_ms'], '{:.1f}')} | {_num(run['max_ms'], '{:.1f}')} |"
            )
    run_at, idle = entry.get("run_at") or {}, entry.get("idle") or {}
    problem = _status(run_at)
    lines.append("")
    if problem:
        lines.append(f"- run_at lateness: {problem}")
    else:
        lines.append(
            f"- run_at lateness (run_at → start, one idle worker, {run_at['n']} tasks enqueued 1.15–1.35 s ahead): "
            f"p50 {_num(run_at['p50_ms'], '{:.1f}')} ms, p99 {_num(run_at['p99_ms'], '{:.1f}')} ms, "
            f"max {_num(run_at['max_ms'], '{:.1f}')} ms."
        )
    problem = _status(idle)
    if problem:
        lines.append(f"- Idle cost: {problem}")
    else:
        rates = idle.get("per_worker_per_second", {})
        lines.append(
            f"- Idle cost ({idle['workers']} idle workers with wake-ups, {idle['window_seconds']:g} s, counted by each "
            f"worker's own connection: `bench/counting_worker.py`): {_num(rates.get('statements'))} statements "
            f"(queries, `SET autocommit`, `COMMIT`) and {_num(rates.get('selects'))} SELECTs per worker per second."
        )
        polling = idle.get("polling_per_worker_per_second")
        if polling:
            lines.append(
                f"- Idle cost without wake-ups ({idle['workers']} polling workers, same window): "
                f"{_num(polling.get('statements'))} statements and {_num(polling.get('selects'))} SELECTs "
                "per worker per second."
            )
    lines += ["", "| target | measured | target | |", "|---|---|---|---|"]
    for what, value, target, sign in latency.verdicts(entry):
        verdict = "–" if value is None else ("met" if value <= target else "missed")
        lines.append(f"| {what} | {_num(value)} | {sign} {target:g} | {verdict} |")
    return lines + [""]


def _side_by_side(method: dict) -> str:
    """Return how the section's configurations shared the run (empty for a run that measured them one by one)."""
    if not method:
        return ""
    return (
        f"All {method['streams']} streams (TaskHub and Celery with 1 and 4 workers, run_at) ran at the same time, "
        f"each on its own queue with its own workers, each sending one task every {method['period_seconds']:g} s "
        f"at its own place, {method['stagger_seconds']:g} s after the previous stream's: no two pickups in flight "
        "together."
    )


def _fairness(results: dict) -> list[str]:
    entry, lines = _heading(results, "fairness", "8. Fair scheduling between users")
    if entry is None:
        return lines
    wait, drain = entry.get("wait") or {}, entry.get("drain") or {}
    problem = _status(wait)
    if problem:
        lines.append(f"- Wait of a small user: {problem}")
    else:
        for mode, found in wait["modes"].items():
            if found.get("p100_tasks_before") is None or found["started"] < found["expected"]:
                lines.append(
                    f"- fairness={mode}: {found['started']} of user B's {found['expected']} tasks started behind "
                    f"user A's {found['backlog']:,}-task backlog before the step's time ran out"
                )
                continue
            verdict = ""
            if mode == "owner":
                meets = found["p100_batches"] <= wait["target_batches"]
                verdict = f" — {'meets' if meets else 'misses'} the target ≤ {wait['target_batches']} claim batches"
            lines.append(
                f"- fairness={mode}: user B's {found['expected']} tasks behind user A's {found['backlog']:,}, one "
                f"worker (concurrency 2, claim batches of {wait['claim_batch']}): p100 wait "
                f"{found['p100_tasks_before']} tasks started before them ({found['p100_batches']:.1f} batches), "
                f"{found['p100_ms']:.0f} ms{verdict}."
            )
    problem = _status(drain)
    if problem:
        lines.append(f"- Drain with fairness=owner: {problem}")
    else:
        owner, none = summarize(drain["rates"].get("owner", [])), summarize(drain["rates"].get("none", []))
        verdict = "meets" if drain["meets_target"] else "misses"
        lines.append(
            f"- Drain of tasks of {drain['owners']} owners, {drain['workers']} workers: fairness=owner "
            f"{_spread(owner)}, none {_spread(none)}: {_num(drain['ratio'])}× — {verdict} the target "
            f"≥ {drain['target_ratio']:g}×."
        )
    return lines + [""]


def _console_load(results: dict) -> list[str]:
    if "console" not in results["meta"].get("sections", []):
        return []  # a run from before the section, or one that left it out
    entry, lines = _heading(results, "console", "10. The console under load: a bulk retry beside draining workers")
    if entry is None:
        return lines
    verdict = "meets" if entry["ratio"] is not None and entry["ratio"] >= entry["target_ratio"] else "misses"
    lines += [
        f"Two `run_worker --burst --queue default` workers drain {entry['drain_tasks']:,} no-op tasks, alone and "
        f'then while `run_bulk_actions` carries out the console\'s "Retry all" of a failure group of '
        f"{entry['bulk_tasks']:,} failed tasks in another queue (batches of 1,000 a transaction, each followed by "
        "the runner's pause, `--sleep-coef 1` by default); the drain "
        "starts once the action has committed its first batch. Rounds alternate; median (min–max).",
        "",
        f"- Drain alone: {_spread(entry['alone'])}; beside the bulk retry: {_spread(entry['beside'])}: "
        f"{_num(entry['ratio'])}× — {verdict} the target ≥ {entry['target_ratio']:g}×.",
    ]
    for r in entry["rounds"]:
        beside = r["beside"]
        covered = "still running when the drain ended" if beside["bulk_covered_drain"] else "done before the drain"
        lines.append(
            f"- Round {r['rep'] + 1}: alone {_num(r['alone']['rate'], '{:,.0f}')}/s, beside "
            f"{_num(beside['rate'], '{:,.0f}')}/s; the bulk action retried "
            f"{beside['bulk_changed_when_drained']:,} tasks during the drain and {beside['bulk_changed']:,} in all, "
            f"{_num(beside['bulk_rate'], '{:,.0f}')}/s ({covered})."
        )
    return lines + [""]


def _cluster(results: dict) -> list[str]:
    if "cluster" not in results["meta"].get("sections", []):
        return []  # a run from before the section, or one that left it out
    entry, lines = _heading(results, "cluster", "9. Many hosts on one MariaDB")
    if entry is None:
        return lines
    rates = {phase: summarize(values) for phase, values in entry["rates"].items()}
    per_round = ", ".join(_num(r) for r in entry["ratio_per_round"])
    verdict = "meets" if entry["meets_target"] else "misses"
    lines += [
        "Network namespaces on this machine (scripts/cluster/netns-drills): a private MariaDB primary and its "
        "replica, web1 and web2 (gunicorn 2 × 4), work1 and work2, a client; every host shares the same cores. "
        f"Each phase enqueues {entry['tasks']:,} no-op tasks through both web hosts (bulk), then "
        "`run_worker --burst --concurrency 4` on both worker hosts drains them; drain = tasks ÷ (last finish − "
        f"first start). {entry['rounds']} round(s), the phases in turn; median (min–max).",
        "",
        f"- Drain, 2 web × 2 worker hosts: {_spread(rates.get('idle'))} with nobody polling the statistics.",
        f"- With `GET /api/tasks/statistics?scope=all` polled at {entry['poll_rate']:g} req/s through both web "
        f"hosts: from the primary (routing off) {_spread(rates.get('primary'))}, from the replica (routing on) "
        f"{_spread(rates.get('replica'))}: {_num(entry['ratio'])}× (per round {per_round}) — {verdict} the "
        f"target ≥ {entry['target_ratio']:g}×.",
    ]
    for phase, title in (("replica", "from the replica"), ("primary", "from the primary")):
        polled = entry["statistics"][phase]
        answers = ", ".join(f"{key}: {n}" for key, n in sorted(polled["answers"].items()))
        lines.append(
            f"- Statistics {title} while the primary drains: p50 {_num(polled['p50_ms'], '{:.1f}')} ms, p95 "
            f"{_num(polled['p95_ms'], '{:.1f}')} ms over {polled['requests']} requests ({answers})."
        )
    counted = entry["statements"]
    lines += [
        "- What the primary served for the statistics, counted by MariaDB itself (userstat): in a quiet window "
        "(no worker, no enqueue) only the statistics are polled, routing on then off. The rows read from the "
        "tables only the statistics read (`task_status_count`, `task_hourly_stats`, `task_queue`) isolate their "
        "statements from the token check's user lookup, which stays on the primary by design; the statements "
        "of the web hosts' addresses are shown beside them.",
    ]
    for phase, title in (("replica", "routing on"), ("primary", "routing off")):
        window = counted[phase]
        rows_read = sum(window["primary"]["rows_read"].values())
        replica_rows = sum(window["replica"]["rows_read"].values())
        lines.append(
            f"  - {title}, {window['requests']} requests: the primary read {rows_read:,} rows of those tables "
            f"and ran {window['primary']['statements']:,} statements for the web hosts "
            f"({window['primary']['selects']:,} SELECTs); the replica read {replica_rows:,} rows and ran "
            f"{window['replica']['statements']:,} ({window['replica']['selects']:,} SELECTs)."
        )
    return lines + [""]


def _share(step: dict) -> str:
    busy = step.get("worker_core_busy")
    return "–" if busy is None else f"{busy:.0%}"


def _capacity(results: dict) -> list[str]:
    if "capacity" not in results["meta"].get("sections", []):
        return []  # a run from before the section, or one that left it out
    entry, lines = _heading(results, "capacity", "11. Workers per MySQL core")
    if entry is None:
        return lines
    method = entry["method"]
    lines += [
        f"A private {method['version']} (binary log on) pinned to core {method['server_core']}, `run_worker` "
        f"processes (default settings, concurrency 1, polling) pinned to core {method['worker_core']}; sleep tasks "
        f"from a backlog enqueued beforehand. Workers are added step by step; each step is measured for "
        f"{method['window_seconds']:g} s after {method['settle_seconds']:g} s: the server's CPU "
        "(`/proc/<mariadbd>/stat`, less its idle "
        f"{entry['baseline_util']:.1%} of a core), the tasks finished, the workers' CPU (children included) and "
        "how busy their core was with anything (this machine's other processes too). A step is limited when the "
        "worker core is ≥ 85% busy, the server uses ≥ 85% of its core, its workers each finish < 75% of the most a "
        "worker finished in any step, or the backlog ran dry; the cost per task is taken from the steps below the "
        "largest without a server limit (server core, dry backlog), and the largest step checks it.",
        "",
    ]
    for key, ramp in entry["ramps"].items():
        label = capacity.duration_label(key)
        lines += [
            f"**{label} tasks**",
            "",
            "| workers | tasks/s | per worker | server, % of a core | server ms/task | server per worker-s (ms) "
            "| workers, % of a core | worker core busy | worker ms/task | limited by |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for step in ramp["steps"]:
            lines.append(
                f"| {step['workers']} | {step['rate']:,.0f} | {step['per_worker_rate']:.1f} | "
                f"{step['server_util']:.1%} | {_num(step['server_ms_per_task'])} | "
                f"{step['server_per_worker_second'] * 1000:.1f} | {step['worker_util']:.1%} | {_share(step)} | "
                f"{_num(step['worker_ms_per_task'])} | {', '.join(step['limits']) or '–'} |"
            )
        lines.append("")
        if ramp.get("workers_per_core") is None:
            lines += [f"- {label}: no step before the largest ran without a server limit: no figure.", ""]
            continue
        check = ramp["check"]
        basis = ", ".join(str(n) for n in ramp["basis_workers"])
        limited = ramp["limited_workers"]
        where = (
            f"Limited steps: {', '.join(str(n) for n in limited)} workers (see the table): there the figures are "
            "not a direct measurement of what the workers could do."
            if limited
            else "No step reached a limit."
        )
        lines += [
            f"- **{label}: at least {ramp['workers_per_core_floor']:,.0f} workers per MySQL core**: the server "
            f"spends {ramp['server_ms_per_task']:.2f} ms of CPU per task (median of the steps with {basis} workers), "
            f"and a worker finishes at most {1 / float(key):g} tasks/s. At the most a worker finished here "
            f"({ramp['tasks_per_worker_second']:.1f} tasks/s): {ramp['workers_per_core']:,.0f} workers per core.",
            f"- Check at {check['workers']} workers: the server used {check['measured_util']:.1%} of its core; "
            f"predicted from the smaller steps {check['predicted_util_by_tasks']:.1%} by tasks at the throughput "
            f"measured ({_num(check['ratio_by_tasks'])}×) and {check['predicted_util_by_workers']:.1%} by workers "
            f"({_num(check['ratio_by_workers'])}×). {where}",
            "",
        ]
    idle = entry.get("idle")
    if idle:
        lines += [
            f"- Idle workers ({idle['workers']}, no task, polling): {idle['server_per_worker_second'] * 1000:.2f} ms "
            f"of server CPU per worker-second — {_num(idle['workers_per_core'], '{:,.0f}')} idle workers per core; "
            f"their own CPU {idle['worker_util']:.1%} of a core.",
            "",
        ]
    return lines


def _variant(name: str) -> str:
    return "all on" if name == "all" else f"{name} off"


def render(results: dict) -> str:
    """Return RESULTS.md for one run."""
    meta, mach, vers = results["meta"], results["machine"], results["versions"]
    lines = ["# TaskHub benchmark results", ""]
    if meta.get("quick"):
        lines += ["> **Quick smoke run (BENCH_QUICK=1): tiny sizes, one repetition — not figures to quote.**", ""]
    lines += [
        f"Run {meta['date']} (took {meta['duration_seconds']:.0f} s) by `make bench`; raw numbers in "
        f"`{meta.get('raw_path') or 'bench/out/' + meta['json_name']}`.",
        "",
        f"- Machine: {mach['cpu_model']}, {mach['cores']} cores, {mach['ram_gib']} GiB RAM, Linux {mach['kernel']}; "
        f"load average at start {mach['loadavg']}, at end {results.get('machine_end', {}).get('loadavg')}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        "- One MariaDB server for TaskHub, django-tasks-db and the raw loop (utf8mb4, READ COMMITTED, "
        "persistent connections); Celery's broker is the local Redis.",
        "",
    ]
    cores = mach.get("cores") or 1
    if mach["loadavg"][0] > 0.5 * cores:
        lines += [f"> ⚠️ The machine was busy when the run started (load {mach['loadavg'][0]}): figures are noisy.", ""]
    now = targets(results)
    lines += _targets_table(results) + compare.before_after(results, now) + compare.over_pairs(results, now)
    lines += _throughput(results) + _djtasks(results) + _scale(results) + _auth(results) + _memory(results)
    lines += _shortcuts(results) + _schedules(results) + _latency(results) + _fairness(results)
    lines += _cluster(results) + _console_load(results) + _capacity(results)
    errors = results.get("errors") or []
    if errors:
        lines += ["## Problems during the run", ""] + [f"- {e}" for e in errors] + [""]
    return "\n".join(lines + compare.findings())


ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "bench" / "runs" / "published.json"


def render_run(
    source: Path, *, before: Path | None = None, before_label: str = "", pairs: list[tuple[Path, Path]] = ()
) -> str:
    """Return the report of the saved run `source` (and, with `before`, an earlier run's ratios beside it).

    With `pairs` ((before, after) runs), also each pair's changes and the verdict on their median.
    Relative paths are read from the repository's root and cited as given.
    """
    results = json.loads((ROOT / source).read_text())
    results["meta"]["raw_path"] = source.as_posix()  # a committed run (bench/runs/) is cited where it lies
    add_summaries(results)
    if before is not None:
        results["before"] = compare.load_before(ROOT / before, before_label or "an earlier run")
        results["before"]["raw_path"] = before.as_posix()
    if pairs:
        results["pairs"] = [compare.load_pair(ROOT, earlier, later) for earlier, later in pairs]
    return render(results)


def published() -> dict[str, str]:
    """Return {report path: its text} for every report `bench/runs/published.json` lists, rendered from its runs.

    Each entry names the committed run a report shows and, optionally, the run it is compared with
    and the same-hour pairs whose median change decides a regression; the reports in the repository are these texts byte for byte (bench/tests/test_published.py).
    """
    manifest = json.loads(PUBLISHED.read_text())
    return {
        target: render_run(
            Path(entry["run"]),
            before=Path(entry["before"]) if entry.get("before") else None,
            before_label=entry.get("before_label", ""),
            pairs=[(Path(earlier), Path(later)) for earlier, later in entry.get("pairs", [])],
        )
        for target, entry in manifest.items()
    }


def main(argv: list[str]) -> None:
    """Re-render RESULTS.md from a saved JSON run (with BENCH_BEFORE: next to an earlier run's ratios).

    `--published` re-renders every report listed in bench/runs/published.json instead.
    """
    if argv[:1] == ["--published"]:
        for target, text in published().items():
            (ROOT / target).write_text(text)
        return
    source = Path(argv[0])
    target = Path(argv[1]) if len(argv) > 1 else Path("bench/RESULTS.md")
    before = os.environ.get("BENCH_BEFORE", "").strip()
    label = os.environ.get("BENCH_BEFORE_LABEL", "").strip()
    target.write_text(render_run(source, before=Path(before) if before else None, before_label=label))


if __name__ == "__main__":
    main(sys.argv[1:])
