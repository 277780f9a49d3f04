"""Before and after: the targets of a saved earlier run (BENCH_BEFORE) next to this run's, for RESULTS.md.

The earlier run is a `make bench` of the product before a fix (peers measured in that same
run), so each side's ratios compare TaskHub with peers measured alongside it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

FINDINGS = Path(__file__).resolve().parent / "FINDINGS.md"


def load_before(path: Path, label: str) -> dict:
    """Return what RESULTS.md shows of a saved run: its date, label and targets."""
    from bench.report import add_summaries, targets

    earlier = json.loads(path.read_text())
    add_summaries(earlier)
    return {
        "label": label,
        "date": earlier["meta"]["date"],
        "json_name": path.name,
        "raw_path": path.as_posix(),
        "loadavg": earlier["machine"]["loadavg"],
        "targets": [[what, value] for what, value, _, _ in targets(earlier)],
    }


def before_after(results: dict, now: list[tuple[str, float | None, float, bool]]) -> list[str]:
    """Return the "Before and after" section, or nothing when the run names no earlier run."""
    before = results.get("before")
    if not before:
        return []
    earlier = {what: value for what, value in before["targets"]}
    lines = [
        "## Before and after the fixes",
        "",
        f"Before: {before['label']} — run {before['date']} "
        f"(`{before.get('raw_path') or 'bench/out/' + before['json_name']}`, load average "
        f"at start {before['loadavg']}), with its own peer runs. After: this run.",
        "",
        f"Change is after against before, signed so that + is better whichever way the measure points; "
        f"a measure regresses when it is more than {REGRESSION_PCT:g} % worse.",
        "",
        "| measure | before | after | target | change | |",
        "|---|---|---|---|---|---|",
    ]
    for what, value, target, higher in now:
        if what not in earlier:
            continue
        sign = "≥" if higher else ("<" if "(%)" in what else "≤")
        pct = change_pct(earlier[what], value, higher=higher)
        change = "–" if pct is None else f"{pct:+.1f} %"
        lines.append(
            f"| {what} | {_num(earlier[what])} | {_num(value)} | {sign} {target:g} | {change} | {regression_verdict(pct)} |"
        )
    return lines + [""]


def load_pair(root: Path, before: Path, after: Path) -> dict:
    """Return the targets of a same-hour pair: a run of the product before and one of the code after."""
    return {"before": _side(root, before), "after": _side(root, after)}


def _side(root: Path, path: Path) -> dict:
    from bench.report import add_summaries, targets

    run = json.loads((root / path).read_text())
    add_summaries(run)
    return {
        "date": run["meta"]["date"],
        "raw_path": path.as_posix(),
        "targets": {what: value for what, value, _, _ in targets(run)},
    }


def over_pairs(results: dict, now: list[tuple[str, float | None, float, bool]]) -> list[str]:
    """Return the "over same-hour pairs" section: each pair's change per measure and the verdict on their median."""
    pairs = results.get("pairs") or []
    if not pairs:
        return []
    lines = [
        "## Before and after over same-hour pairs",
        "",
        "Each pair is one run of the product before and one of the code after, started one right after the "
        "other on the same machine, each with its own peers. On this shared 2-core machine one pair moves a "
        f"measure by up to about 20 % either way, so the verdict is taken on the median of the {len(pairs)} "
        f"pairs' changes: a measure regresses when that median is more than {REGRESSION_PCT:g} % worse. "
        "Changes are signed so that + is better; every pair's is shown.",
        "",
    ]
    for n, pair in enumerate(pairs, 1):
        before, after = pair["before"], pair["after"]
        lines.append(
            f"- Pair {n}: before `{before['raw_path']}` ({before['date']}), after `{after['raw_path']}` ({after['date']})."
        )
    lines += [
        "",
        "| measure | " + " | ".join(f"pair {n}" for n in range(1, len(pairs) + 1)) + " | median | |",
        "|---|" + "---|" * (len(pairs) + 2),
    ]
    for what, _value, _target, higher in now:
        changes = [
            change_pct(pair["before"]["targets"].get(what), pair["after"]["targets"].get(what), higher=higher)
            for pair in pairs
        ]
        known = [change for change in changes if change is not None]
        if not known:
            continue
        middle = statistics.median(known)
        cells = " | ".join("–" if change is None else f"{change:+.1f} %" for change in changes)
        lines.append(f"| {what} | {cells} | {middle:+.1f} % | {regression_verdict(middle)} |")
    return lines + [""]


REGRESSION_PCT = 10.0


def change_pct(before: float | None, after: float | None, *, higher: bool) -> float | None:
    """Return how much better (+) or worse (−) `after` is than `before`, in %; None when either is missing or 0."""
    if before is None or after is None or before == 0 or after == 0:
        return None
    return (after / before - 1) * 100 if higher else (before / after - 1) * 100


def regression_verdict(pct: float | None) -> str:
    """Return "regressed" for a change more than REGRESSION_PCT % worse, "–" when unknown, else "no regression"."""
    if pct is None:
        return "–"
    return "regressed" if pct < -REGRESSION_PCT else "no regression"


def findings() -> list[str]:
    """Return bench/FINDINGS.md (the profiling behind missed targets), if present."""
    if not FINDINGS.exists():
        return []
    return [FINDINGS.read_text().rstrip(), ""]


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
