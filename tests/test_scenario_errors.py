"""Malformed scenario files: each is a one-screen error with file:line, never a traceback,
refused within 2 s and 200 MB (measured in a bounded child process: tests/bounded.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bounded import Outcome, measure

MALFORMED = sorted((Path(__file__).parent / "malformed").glob("*.yaml"))
HEADER = re.compile(r"^# expect: line (\d+): (.+)$")


def test_there_are_at_least_30() -> None:
    assert len(MALFORMED) >= 30


@pytest.fixture(scope="module")
def outcomes() -> dict[Path, Outcome]:
    """Every malformed file loaded once, in one bounded child process."""
    return dict(zip(MALFORMED, measure([("scenario", str(p)) for p in MALFORMED]), strict=True))


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.stem)
def test_malformed_file(path: Path, outcomes: dict[Path, Outcome]) -> None:
    m = HEADER.match(path.read_text().splitlines()[0])
    assert m, f"{path.name} lacks its '# expect: line N: words' header"
    line, words = int(m.group(1)), m.group(2)
    out = outcomes[path]
    out.check(lines=12)
    assert out.path == str(path), out
    assert out.line == line, out.text
    assert f"{path}:{line}" in out.text
    assert words in out.text, out.text


def test_pytest_shows_them_without_tracebacks(tmp_path: Path) -> None:
    """Collected by pytest (renamed to *.pin.yaml): each an error of a few lines."""
    for path in MALFORMED[:12]:
        shutil.copy(path, tmp_path / (path.stem + ".pin.yaml"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out  # collection errors
    assert "Traceback" not in out and "raise " not in out, out
    for path in MALFORMED[:12]:
        line = HEADER.match(path.read_text().splitlines()[0]).group(1)  # type: ignore[union-attr]
        assert f"{path.stem}.pin.yaml:{line}" in out, (path.name, out)
    section = out.split("ERROR collecting")[1]
    assert len(section.splitlines()) <= 10, section
