"""Show a fix_mysql plan: each fix with why and its exact SQL, then what is skipped and why."""

from __future__ import annotations

from diagnostics.fixes.apply import Outcome, describe_fix
from diagnostics.fixes.plan import Plan
from diagnostics.fixes.snapshot import Snapshot


def render_plan(plan: Plan, snapshot: Snapshot, *, applying: bool) -> str:
    """Return the plan as text an operator can review (and a DBA can run by hand)."""
    lines = [f"fix_mysql: database {snapshot.database} on {snapshot.server} (as {snapshot.account})."]
    if plan.nothing_to_do:
        lines.append(
            "Nothing to do: everything is utf8mb4 and InnoDB, and every foreign key the models declare exists."
        )
    elif applying:
        lines.append(f"Applying {len(plan.fixes)} fix(es):")
    else:
        lines.append(f"Dry run: nothing is changed. --apply would run these {len(plan.fixes)} fix(es):")
    for number, fix in enumerate(plan.fixes, 1):
        rows = f" (≈ {fix.rows:,} rows)" if fix.rows is not None else ""
        lines.append(f"{number}. {describe_fix(fix)}{rows}")
        lines.append(f"   why: {fix.reason}")
        lines.extend(f"   SQL: {sql};" for sql in fix.sql)
    if plan.skipped:
        lines.append("Skipped, left exactly as they are:")
        lines.extend(f"⚠️  {skip.target}: {skip.reason}" for skip in plan.skipped)
    lines.extend(f"Note: {note}" for note in plan.notes)
    return "\n".join(lines)


def render_outcome(outcomes: list[Outcome], remaining: Plan) -> str:
    """Return the summary after --apply, including anything a second run would still do."""
    failed = [outcome for outcome in outcomes if not outcome.ok]
    lines = [f"{len(outcomes) - len(failed)} fix(es) applied, {len(failed)} failed."]
    if remaining.nothing_to_do:
        lines.append("A second run finds nothing to do.")
    else:
        lines.append(f"Still to do: {', '.join(describe_fix(fix) for fix in remaining.fixes)}.")
    return "\n".join(lines)
