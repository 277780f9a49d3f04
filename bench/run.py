"""`make bench`: run every section, clean up, write bench/out/*.json and RESULTS.md."""

from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

from bench import (
    auth,
    capacity,
    cluster_bench,
    compare,
    console_bench,
    db,
    djtasks_compare,
    fairness_bench,
    latency,
    machine,
    memory,
    report,
    scale,
    schedules_bench,
    shortcuts,
    taskhub,
)
from bench.config import OUT_DIR, load_config
from bench.context import Context, Unavailable
from bench.peers import celery_bench, djtasks, rawsql
from bench.procs import Children

TASKHUB_SECTIONS = {
    "taskhub": taskhub.run_throughput,
    "djtasks": djtasks_compare.run,
    "scale": scale.run,
    "auth": auth.run,
    "memory": memory.run,
    "shortcuts": shortcuts.run,
    "schedules": schedules_bench.run,
    "latency": latency.run,
    "fairness": fairness_bench.run,
    "cluster": cluster_bench.run,
    "console": console_bench.run,
    "capacity": capacity.run,
}
PEERS = {"django-tasks-db": djtasks.run, "celery": celery_bench.run, "raw": rawsql.run}


def _measure(ctx: Context, name: str, func: Callable[[Context], dict], *, errors: list) -> dict:
    """Run one measurement; return its figures, or why it could not run. Never raises."""
    try:
        return func(ctx)
    except Unavailable as exc:
        ctx.log(f"{name}: {exc}")
        return {"unavailable": str(exc)}
    except Exception as exc:
        ctx.log(f"{name} failed: {exc}\n{traceback.format_exc()}")
        errors.append(f"{name}: {exc}")
        return {"error": str(exc)}


def _cleanup(ctx: Context) -> None:
    ctx.children.stop_all()
    for name in ctx.created_databases:
        if name in ctx.kept_databases:
            ctx.log(f"keeping {name} (BENCH_KEEP_DATASET=1)")
            continue
        try:
            db.drop_database(ctx.cfg, name)
        except Exception as exc:
            ctx.log(f"could not drop {name}: {exc}")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    """Run the configured sections, always clean up, and write the JSON and Markdown results."""
    cfg = load_config()
    stamp = datetime.now(UTC)
    log_dir = OUT_DIR / "logs" / stamp.strftime("%Y%m%dT%H%M%SZ")
    log_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(cfg=cfg, children=Children(log_dir))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    json_name = f"results-{stamp.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if cfg.quick else ''}.json"
    results: dict = {
        "meta": {
            "date": stamp.isoformat(timespec="seconds"),
            "quick": cfg.quick,
            "tasks": cfg.tasks,
            "repeats": cfg.repeats,
            "sections": list(cfg.sections),
            "json_name": json_name,
        },
        "machine": machine.machine(),
        "versions": machine.versions(cfg),
        "sections": {},
    }
    errors: list[str] = []
    ctx.log(f"sections {', '.join(cfg.sections)}; {cfg.tasks} tasks × {cfg.repeats}; logs in {log_dir}")
    try:
        if "peers" in cfg.sections:
            results["sections"]["peers"] = {
                name: _measure(ctx, name, func, errors=errors) for name, func in PEERS.items()
            }
        for name, func in TASKHUB_SECTIONS.items():
            if name in cfg.sections:
                results["sections"][name] = _measure(ctx, name, func, errors=errors)
    except KeyboardInterrupt:
        errors.append("interrupted: results are partial")
    finally:
        _cleanup(ctx)
    results["errors"] = errors
    results["meta"]["duration_seconds"] = time.monotonic() - ctx.started
    results["machine_end"] = {"loadavg": machine.machine()["loadavg"]}
    if cfg.before_path:
        results["before"] = compare.load_before(cfg.before_path, cfg.before_label)
    report.add_summaries(results)
    (OUT_DIR / json_name).write_text(json.dumps(results, indent=2, default=str))
    (OUT_DIR / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    cfg.results_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.results_path.write_text(report.render(results))
    ctx.log(f"wrote {cfg.results_path} and bench/out/{json_name}")
    # Benchmarks report; they fail only when the harness itself could not run.
    return 0


if __name__ == "__main__":
    sys.exit(main())
