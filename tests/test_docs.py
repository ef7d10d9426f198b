"""The docs are current: generated tables match the code, README.md stays small, relative links
resolve, and nothing in the repository points at notes outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import docs

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT = 10 * 1024
#: folders that are not the repository's own files
SKIPPED = {".git", ".tox", ".venv", ".tools", "__pycache__", ".mypy_cache", ".ruff_cache"}
SKIPPED |= {".pytest_cache", ".hypothesis", "build", "dist", "reports", "node_modules"}
#: written in two halves so that this file does not match itself
OUTSIDE = ("shared" + "/docs", ".." + "/shared")


def test_generated_tables_are_current() -> None:
    stale = [str(p.relative_to(ROOT)) for p in docs.stale(ROOT)]
    assert not stale, f"generated tables out of date in {stale}; run: python -m harness.docs"


def test_every_table_is_used_somewhere() -> None:
    text = "".join(p.read_text("utf-8") for p in docs.documents(ROOT))
    for name in docs.TABLES:
        assert docs.BEGIN.format(name=name) in text, name


def test_a_stale_table_is_found_and_rewritten(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "scenarios").mkdir()
    begin, end = docs.BEGIN.format(name="pin-sets"), docs.END.format(name="pin-sets")
    (tmp_path / "README.md").write_text(f"# x\n\n{begin}\n| old |\n{end}\n", "utf-8")
    assert docs.main(["--check", "--root", str(tmp_path)]) == 1
    assert docs.main(["--root", str(tmp_path)]) == 0
    assert docs.main(["--check", "--root", str(tmp_path)]) == 0
    assert "`card-face`" in (tmp_path / "README.md").read_text("utf-8")


def test_an_unknown_block_is_an_error() -> None:
    with pytest.raises(SystemExit, match="unknown generated block"):
        docs.render(docs.BEGIN.format(name="nope") + "\n" + docs.END.format(name="nope"))


def test_readme_is_at_most_10_kb() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


def _files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIPPED or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file():
            out.append(path)
    return out


def test_no_file_refers_outside_the_repository() -> None:
    found = []
    for path in _files():
        try:
            text = path.read_text("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if any(o in line for o in OUTSIDE):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", path.read_text("utf-8")).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_relative_links_point_at_files_and_headings() -> None:
    broken = []
    for doc in docs.documents(ROOT):
        text = _FENCE.sub("", doc.read_text("utf-8"))
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            where = f"{doc.relative_to(ROOT)}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)
