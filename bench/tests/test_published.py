"""The committed reports are their committed runs rendered again, and every run a document cites is committed."""

from __future__ import annotations

import json
import re

from bench.report import PUBLISHED, ROOT, published, render_run

# Documents that quote figures (bench/README.md only shows commands that write bench/out/).
DOCUMENTS = ("README.md", "bench/RESULTS.md", "bench/FINDINGS.md", "docs")
RUN_PATH = re.compile(r"bench/(?:runs|out)/[\w.-]+\.json")


def test_every_published_report_is_its_committed_runs_rendered_again() -> None:
    reports = published()
    assert "bench/RESULTS.md" in reports
    for target, text in reports.items():
        assert (ROOT / target).read_text() == text, f"{target} is not `python -m bench.report --published` output"


def test_a_report_changes_with_the_run_it_is_rendered_from(tmp_path) -> None:
    entry = json.loads(PUBLISHED.read_text())["bench/RESULTS.md"]
    results = json.loads((ROOT / entry["run"]).read_text())
    results["meta"]["duration_seconds"] += 1
    changed = tmp_path / "run.json"
    changed.write_text(json.dumps(results))
    assert render_run(changed) != render_run(ROOT / entry["run"])


def _documents() -> list:
    found = []
    for name in DOCUMENTS:
        path = ROOT / name
        found += sorted(path.rglob("*.md")) if path.is_dir() else [path]
    return found


def test_every_run_a_document_cites_is_committed_under_bench_runs() -> None:
    cited = {
        (doc.relative_to(ROOT).as_posix(), ref) for doc in _documents() for ref in RUN_PATH.findall(doc.read_text())
    }
    assert cited, "the documents cite no run at all"
    for doc, ref in sorted(cited):
        assert ref.startswith("bench/runs/"), f"{doc} cites {ref}, which is not committed (bench/out/ is ignored)"
        assert (ROOT / ref).is_file(), f"{doc} cites {ref}, which does not exist"
