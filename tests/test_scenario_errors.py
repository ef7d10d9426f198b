"""Malformed scenario files: each is a one-screen error with file:line, never a traceback."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.scenario import load_scenarios

MALFORMED = sorted((Path(__file__).parent / "malformed").glob("*.yaml"))
HEADER = re.compile(r"^# expect: line (\d+): (.+)$")


def test_there_are_at_least_30() -> None:
    assert len(MALFORMED) >= 30


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.stem)
def test_malformed_file(path: Path) -> None:
    m = HEADER.match(path.read_text().splitlines()[0])
    assert m, f"{path.name} lacks its '# expect: line N: words' header"
    line, words = int(m.group(1)), m.group(2)
    with pytest.raises(ConfigError) as info:
        load_scenarios(path)
    err = info.value
    text = err.render()
    assert err.location is not None and err.location.path == str(path)
    assert err.location.line == line, text
    assert f"{path}:{line}" in text
    assert words in text, text
    assert "Traceback" not in text and len(text.splitlines()) <= 12, text


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
