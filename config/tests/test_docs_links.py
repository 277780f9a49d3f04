"""The README stays a short landing page, and every relative link of the docs leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
README = BASE_DIR / "README.md"
README_MAX_LINES = 250
ARCHITECTURE_MAX_LINES = 150
# Pages the README links to that are still to be written. Once a page exists, its entry goes.

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def pages() -> list[Path]:
    return [README, *sorted((BASE_DIR / "docs").glob("*.md"))]


def without_code(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    prose = without_code(text)
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(2).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(page: Path, root: Path = BASE_DIR) -> list[str]:
    """The links of `page` that lead to no file, or to no heading of a Markdown file."""
    broken = []
    for link in links(page.read_text()):
        if SCHEME.match(link):
            continue  # http(s), mailto: not checked here
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        if not path.exists():
            broken.append(f"{link} (no file {relative})")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link} (no heading #{anchor} in {relative})")
    return broken


def test_readme_is_a_short_landing_page():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; keep it to {README_MAX_LINES} and move detail to docs/"
    )


def test_every_relative_link_of_the_readme_and_docs_leads_to_a_file_and_heading():
    broken = {page.relative_to(BASE_DIR).as_posix(): broken_links(page) for page in pages()}
    assert {page: found for page, found in broken.items() if found} == {}


def test_the_architecture_page_is_short_and_names_only_files_that_exist():
    page = BASE_DIR / "docs" / "ARCHITECTURE.md"
    text = page.read_text()
    assert len(text.splitlines()) <= ARCHITECTURE_MAX_LINES
    named = set(re.findall(r"`((?:config|core|accounts|tasks|diagnostics|bench)/[\w/.<>-]+\.py)`", text))
    missing = sorted(path for path in named if "<" not in path and not (BASE_DIR / path).exists())
    assert named and missing == []


def test_the_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "A.md").write_text("# A\n\n## Two words\n\n## Two words\n")
    page = tmp_path / "docs" / "B.md"
    page.write_text(
        "[ok](A.md) [ok](A.md#two-words) [ok](A.md#two-words-1) [ok](#b) [web](https://example.com/x)\n"
        "`[in code](nowhere.md)`\n```\n[in a fence](nowhere.md)\n```\n"
        "[bad](missing.md) [bad anchor](A.md#three) ![image](img.png)\n[ref]: ../nothing.md\n\n# B\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "missing.md (no file docs/missing.md)",
        "A.md#three (no heading #three in docs/A.md)",
        "img.png (no file docs/img.png)",
        "../nothing.md (no file nothing.md)",
    ]
