"""The main job's wall time: the scenario library through pcscd, the old way and the new way.

Runs the command ``./run suite`` runs, interleaved (old, new, old, new, ...), at least three
times each, and prints every run, the medians and their ratio (goal: new < 30 s, every item
still run):

- ``old``: one process, ``-n 0`` (the library item after item on one emulated reader);
- ``new``: ``./run suite``'s default, ``-n N --dist load`` (the library spread over N slots of
  one pcscd; timing scenarios alone at the end).

``--old-root`` runs the old way from another checkout (e.g. an export of the commit before
the spread: ``git archive <commit> | tar -x -C /tmp/old``), so that "old" is the old code too.
``--workers 3,4,6`` measures several N (each its own column). Each run must pass with the
same number of items (read from its JUnit XML); a run that does not is reported and counts as
a failure of the bench. Needs root (pcscd); wait for any other pcscd to go first (a machine
shared with other runs: ``flock /tmp/pinloop-pcscd.lock …``).

    .tox/check/bin/python bench/bench_suite.py [--runs 3] [--workers 4] [--old-root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def suite_command(root: Path, reports: Path, extra: list[str]) -> list[str]:
    """What ``./run suite`` runs (see ``run``), its reports into ``reports``."""
    return [
        sys.executable,
        "-m",
        "pytest",
        str(root / "scenarios"),
        "-p",
        "no:cacheprovider",
        "-q",
        "--pinloop-target",
        "pcscd",
        "--junitxml",
        str(reports / "junit-suite.xml"),
        "--alluredir",
        str(reports / "allure-results"),
        "--clean-alluredir",
        "--pinloop-reports",
        str(reports),
        *extra,
    ]


def wait_for_no_pcscd(timeout: float = 300.0) -> None:
    """Another run's pcscd (a shared machine) must be gone: pinloop starts its own."""
    from harness.lab.pcscd import _running_pid

    end = time.monotonic() + timeout
    while _running_pid() is not None and time.monotonic() < end:
        time.sleep(0.5)


def items(junit: Path) -> tuple[int, int]:
    """(test cases, of them not passed) in a JUnit file."""
    root = ET.parse(junit).getroot()
    cases = list(root.iter("testcase"))
    bad = sum(1 for c in cases if any(c.find(t) is not None for t in ("failure", "error")))
    return len(cases), bad


def timing_latency(results: Path) -> list[float]:
    """The VERIFY latencies (ms) the timing scenarios measured (their CSV attachments)."""
    values: list[float] = []
    for path in results.glob("*-result.json"):
        result = json.loads(path.read_text())
        tags = {lb["value"] for lb in result.get("labels", []) if lb["name"] == "tag"}
        if not tags & {"verify-latency-budget", "verify-constant-time"}:
            continue
        for attachment in result.get("attachments", []):
            if attachment["name"] == "latency samples (CSV)":
                lines = (results / attachment["source"]).read_text().splitlines()[1:]
                rows = (ln.split(",") for ln in lines)
                values += [float(f[2]) / 1000 for f in rows if f[0] == "20"]
    return values


def tail(values: list[float]) -> str:
    if len(values) < 100:
        return "no timing samples"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"timing VERIFY p50 {q[49]:.3f} p99 {q[98]:.3f} max {max(values):.3f} ms"


def run_once(root: Path, extra: list[str]) -> tuple[float, int, int, str]:
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        reports = Path(tmp)
        wait_for_no_pcscd()
        start = time.perf_counter()
        proc = subprocess.run(
            suite_command(root, reports, extra),
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        wall = time.perf_counter() - start
        junit = reports / "junit-suite.xml"
        count, bad = items(junit) if junit.exists() else (0, 0)
        last = (proc.stdout.strip().splitlines() or [""])[-1]
        last += "; " + tail(timing_latency(reports / "allure-results"))
        if proc.returncode != 0:
            bad = max(bad, 1)
            last += f" (exit {proc.returncode})"
            kept = Path(tempfile.mkdtemp(prefix="bench-suite-failed-"))
            (kept / "stdout.txt").write_text(proc.stdout + proc.stderr)
            last += f"; output kept in {kept}/stdout.txt"
        return wall, count, bad, last


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="runs of each way (at least 3)")
    cores = len(os.sched_getaffinity(0))
    ap.add_argument(
        "--workers",
        default=str(min(8, max(2, 3 * cores))),
        help="N of the new way (default: ./run suite's, 3 per core, 2 to 8); a list: each",
    )
    ap.add_argument("--old-root", type=Path, default=ROOT, help="checkout the old way runs in")
    args = ap.parse_args()
    if args.runs < 3:
        ap.error("--runs: at least 3")
    ways: dict[str, tuple[Path, list[str]]] = {"old (-n 0)": (args.old_root, ["-n", "0"])}
    for n in args.workers.split(","):
        ways[f"new (-n {n})"] = (ROOT, ["-n", n, "--dist", "load", "-p", "no:hypothesispytest"])
    walls: dict[str, list[float]] = {w: [] for w in ways}
    counts: set[int] = set()
    failed = False
    for i in range(args.runs):
        for way, (root, extra) in ways.items():
            wall, count, bad, last = run_once(root, extra)
            walls[way].append(wall)
            counts.add(count)
            failed |= bad > 0
            print(f"run {i + 1} {way:12} {wall:6.1f} s  {count} items  {last}", flush=True)
    print()
    old = statistics.median(walls["old (-n 0)"])
    for way, values in walls.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{way:12} median {median:5.1f} s  ratio {median / old:.2f}  (runs: {runs})")
    if len(counts) != 1:
        print(f"the runs did not all run the same items: {sorted(counts)}")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
