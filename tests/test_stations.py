"""Many readers at once: one pytest-xdist worker per reader (``-n N --dist each``), the
controller handing each worker its station, results merged into one summary and one report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.pcsc_lab import require_pcsc
from tests.support import ROOT, run_pytest


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pytest(
        str(ROOT / "scenarios" / "lock-at-exactly-n.pin.yaml"),
        "--pinloop-reports",
        str(tmp_path),
        "--junitxml",
        str(tmp_path / "junit.xml"),
        "--alluredir",
        str(tmp_path / "allure"),
        *args,
    )


def test_workers_need_dist_each_and_one_target_each(tmp_path: Path) -> None:
    proc = run(tmp_path, "-n", "2", "--pinloop-target", "inprocess")
    assert proc.returncode == 4 and "use --dist each" in proc.stderr, proc.stderr
    proc = run(tmp_path, "-n", "3", "--dist", "each", "--pinloop-target", "inprocess")
    assert proc.returncode == 4 and "3 workers but 1 --pinloop-target" in proc.stderr


def test_rows_from_every_worker_reach_the_summary(tmp_path: Path) -> None:
    """Two in-process stations (no root needed): the controller writes what both report."""
    proc = run(
        tmp_path,
        "-n",
        "2",
        "--dist",
        "each",
        "--pinloop-target",
        "inprocess",
        "--pinloop-target",
        "inprocess",
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["readers"]["emulated (in-process)"]["outcomes"]["passed"] == 20
    assert data["readers"]["emulated (in-process)"]["verify_latency"]["samples"] > 0


def test_four_emulated_readers_in_parallel(tmp_path: Path) -> None:
    require_pcsc()
    proc = run(tmp_path, "-n", "4", "--dist", "each", "--pinloop-target", "pcscd")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "40 passed" in proc.stdout
    data = json.loads((tmp_path / "summary.json").read_text())
    readers = {
        "Virtual PCD 00 00",
        "Virtual PCD 00 01",
        "Virtual PCD A 00 00",
        "Virtual PCD A 00 01",
    }
    assert set(data["readers"]) == readers
    assert all(r["outcomes"]["passed"] == 10 for r in data["readers"].values())
    junit = (tmp_path / "junit.xml").read_text()
    assert all(f"@pcscd:{k}" in junit for k in range(4))
    env = (tmp_path / "allure" / "environment.properties").read_text()
    assert all(f"name={r}" in env for r in readers)
    # each worker wrote its own Allure results; the reader is a parameter, so none overwrite
    results = [json.loads(p.read_text()) for p in (tmp_path / "allure").glob("*-result.json")]
    assert len(results) == 40
    assert len({r["historyId"] for r in results}) == 40


def test_a_crashed_worker_is_replaced_on_its_own_reader(tmp_path: Path) -> None:
    """Worker gw0 dies in its first scenario; xdist starts another worker, which must get the
    dead one's reader (slot 0), not a slot that does not exist or one in use."""
    require_pcsc()
    flag = tmp_path / "crashed"
    proc = run_pytest(
        str(ROOT / "scenarios" / "lock-at-exactly-n.pin.yaml"),
        "-n",
        "2",
        "--dist",
        "each",
        "--pinloop-target",
        "pcscd",
        "-p",
        "tests.crash_worker",
        "--pinloop-reports",
        str(tmp_path),
        env={"PINLOOP_CRASH_FLAG": str(flag)},
    )
    assert flag.exists()
    assert "1 failed, 19 passed" in proc.stdout, proc.stdout[-3000:]
    assert "worker 'gw0' crashed" in proc.stdout
    readers = json.loads((tmp_path / "summary.json").read_text())["readers"]
    assert readers["Virtual PCD 00 00"]["outcomes"]["passed"] == 9  # the replacement's
    assert readers["Virtual PCD 00 01"]["outcomes"]["passed"] == 10
    assert readers["pcscd:0 (worker gw0 crashed)"]["outcomes"]["error"] == 1
