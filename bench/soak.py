"""Soak: the harness's own tests again and again on a clean clone while the cores are busy.

    python3 bench/soak.py                         # ./run test 3 times, then each PC/SC test
                                                  # module 20 times, under load
    python3 bench/soak.py --test-runs 1 --module-runs 5 --modules tests/test_pcsc_faults.py

What it does:

1. ``git clone`` of this checkout's HEAD into a temporary folder (uncommitted changes are not
   soaked; it says so), and the README's set-up there (``./run test --co -q``: the venv and
   the tox environment, built from ``constraints.txt``).
2. While ``bench/load.py`` keeps every core busy: ``./run test`` (exactly what ``.ci/run``
   calls) ``--test-runs`` times, then every PC/SC test module (those that start pcscd)
   ``--module-runs`` times, round-robin, each run a fresh ``pytest`` process (``--jobs`` of
   them at once, each in its own namespace: a harsher load than the busy processes alone).
3. A table: runs, failures and median wall time of each; the log of every failed run is
   kept and named.

Isolation (``--isolate``, the default when it can): every run gets a mount and network
namespace of its own (``unshare -m -n``) with a private ``/run/pcscd`` and loopback, so it
starts its own pcscd and vpcd ports beside any other pcscd on the host (another soak,
another checkout's tests). Inside it there is no network: the static-report test that
fetches Allure 3 from npm skips, and says so. Needs root, as the PC/SC tests do.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import Load  # a sibling script: runnable without set-up

ROOT = Path(__file__).resolve().parent.parent
ISOLATE = (
    "ip link set lo up && mkdir -p /run/pcscd && mount -t tmpfs pinloop-soak /run/pcscd"
    ' && exec "$@"'
)


@dataclass
class Tally:
    name: str
    seconds: list[float] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)
    summary: str = ""

    def add(self, rc: int, elapsed: float, summary: str, log: Path) -> None:
        self.seconds.append(elapsed)
        self.summary = summary
        if rc != 0:
            self.failed.append(log)

    def row(self) -> str:
        med = statistics.median(self.seconds) if self.seconds else float("nan")
        return (
            f"{self.name:<36} {len(self.seconds):>4} {len(self.failed):>6} {med:>9.1f} s"
            f"  {self.summary}"
        )


def _can_isolate() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and bool(shutil.which("ip"))


def _run(argv: list[str], cwd: Path, log: Path, isolate: bool) -> tuple[int, float, str]:
    if isolate:
        argv = ["unshare", "-m", "-n", "sh", "-c", ISOLATE, "-", *argv]
    env = dict(os.environ, PINLOOP_REQUIRE_PCSC="1", CI="true")
    t = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.call(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    elapsed = time.monotonic() - t
    text = log.read_text(errors="replace")
    last = re.findall(r"^=*\s*(\d+ (?:passed|failed|errors?)\b.*? in [\d.]+s.*?)\s*=*$", text, re.M)
    return rc, elapsed, last[-1] if last else f"exit {rc}"


def pcsc_modules(clone: Path) -> list[str]:
    """The test modules that start pcscd (they use the PC/SC lab fixtures)."""
    found = []
    for path in sorted((clone / "tests").glob("test_*.py")):
        text = path.read_text()
        if "require_pcsc" in text or "pcsc_lab" in text:
            found.append(str(path.relative_to(clone)))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-runs", type=int, default=3, help="runs of ./run test")
    ap.add_argument("--module-runs", type=int, default=20, help="runs of each PC/SC module")
    ap.add_argument("--modules", nargs="*", default=None, help="these modules only")
    ap.add_argument("--procs", type=int, default=None, help="busy processes (default: cores)")
    ap.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=_can_isolate(),
        help="a mount and network namespace per run (default: when root with unshare)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="module runs at once, each in its own namespace (needs --isolate; more load)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the clone and every log")
    args = ap.parse_args()
    if args.jobs > 1 and not args.isolate:
        ap.error("--jobs above 1 needs --isolate: two runs would share one pcscd")

    work = Path(tempfile.mkdtemp(prefix="pinloop-soak-"))
    clone, logs = work / "pinloop", work / "logs"
    logs.mkdir()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"[soak] clean clone of {head} in {clone}"
        + ("; NOT soaked: uncommitted changes" if dirty else "")
    )
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    t = time.monotonic()
    rc, _, _ = _run(["./run", "test", "--co", "-q"], clone, logs / "setup.log", isolate=False)
    if rc != 0:
        print(f"[soak] set-up failed; see {logs / 'setup.log'}")
        return 1
    print(
        f"[soak] set-up (venv, tox environment) in {time.monotonic() - t:.0f} s; "
        f"isolated runs: {'yes' if args.isolate else 'no'}"
    )

    tallies: list[Tally] = []
    with Load(args.procs) as load:
        print(f"[soak] {load.procs} busy processes keep the cores loaded from here on", flush=True)
        tests = Tally("./run test")
        tallies.append(tests)
        for i in range(args.test_runs):
            log = logs / f"run-test-{i + 1}.log"
            rc, elapsed, summary = _run(["./run", "test"], clone, log, args.isolate)
            tests.add(rc, elapsed, summary, log)
            print(
                f"[soak] ./run test #{i + 1}: exit {rc} in {elapsed:.0f} s ({summary})", flush=True
            )
        modules = args.modules if args.modules is not None else pcsc_modules(clone)
        by_module = {m: Tally(m) for m in modules}
        tallies += by_module.values()
        python = str(clone / ".tox" / "check" / "bin" / "python")

        def one(round_: int, module: str) -> None:
            tally = by_module[module]
            log = logs / f"{Path(module).stem}-{round_ + 1}.log"
            argv = [python, "-m", "pytest", module, "-q", "-p", "no:cacheprovider"]
            rc, elapsed, summary = _run(argv, clone, log, args.isolate)
            tally.add(rc, elapsed, summary, log)
            if rc != 0:
                print(
                    f"[soak] FAILED {module} run {round_ + 1}: {summary} (log: {log})", flush=True
                )

        # round-robin: a soak cut short has still run every module about as often
        tasks = [(i, m) for i in range(args.module_runs) for m in modules]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for n, _ in enumerate(pool.map(lambda task: one(*task), tasks), 1):
                if n % len(modules) == 0:
                    print(f"[soak] {n // len(modules)}/{args.module_runs} rounds done", flush=True)

    print(f"\n{'what':<36} {'runs':>4} {'failed':>6} {'median':>11}  last summary")
    for tally in tallies:
        print(tally.row())
    failures = sum(len(t.failed) for t in tallies)
    print(f"\n[soak] {failures} failed runs" + (": logs named above" if failures else ""))
    if not args.keep and not failures:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"[soak] kept: {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
