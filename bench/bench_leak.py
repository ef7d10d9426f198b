"""False-positive and detection rates of the VERIFY timing leak test, with 95 % intervals.

Runs the leak test (``first-vs-last`` on jpki-auth, as the library's ``verify-timing-leak``)
many times: on the constant-time card (every leak verdict is a false positive) and on the card
with ``early-exit-compare`` at 20 µs per compared byte (every pass is a miss). Each run is one
measurement and one verdict, without the runner's replication rule (a leak must also show in
an independent repeat), so the rates are those of a single test; with the rule a false
positive needs two in a row. While it runs, ``--load`` processes keep the cores busy.

    .tox/check/bin/python bench/bench_leak.py [--via pcscd|inprocess] [--sound 200] [--leaky 50]
                                         [--samples 300] [--load 2]

Through pcscd it needs root (it starts its own pcscd).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness.apdu import commands as C
from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config, parse_profile
from harness.run.runner import Runner
from harness.scenario import load_scenarios
from harness.steps.leak import measure
from harness.targets import InProcessTarget, PcscdTarget, Target
from harness.timing import ALPHA, MIN_LEAK_US, leak_test

ROOT = Path(__file__).resolve().parent.parent


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _spin() -> None:  # pragma: no cover - a busy loop in a child process
    while True:
        pass


def one_run(target: Target, samples: int) -> str:
    scenario = load_scenarios(ROOT / "scenarios" / "verify-timing-leak.pin.yaml", JPKI)[0]
    runner = Runner(target, scenario)
    target.begin(scenario.pins)
    runner.session.select_pin("jpki-auth")
    restore = C.verify(runner.session.value("jpki-auth", "right"))
    classes = {
        "first": C.verify(runner.session.value("jpki-auth", "wrong-first")),
        "last": C.verify(runner.session.value("jpki-auth", "wrong-last")),
    }
    got = measure(runner.session, classes, restore, samples)
    result = leak_test(got["first"], got["last"], seed=int(time.time_ns() % 2**31))
    # a pass that was significant, with a difference below MIN_LEAK_US, is counted apart
    return "pass, below the floor" if result.below_floor else result.verdict


def series(via: str, defect: str, runs: int, samples: int, tmp: Path) -> Counter[str]:
    config = load_card_config()
    target: Target = (
        PcscdTarget(config, parse_profile(defect), tmp)
        if via == "pcscd"
        else InProcessTarget(config, parse_profile(defect))
    )
    verdicts: Counter[str] = Counter()
    try:
        for _ in range(runs):
            verdicts[one_run(target, samples)] += 1
    finally:
        target.close()
    return verdicts


def report(name: str, verdicts: Counter[str], wanted: str) -> None:
    n = sum(verdicts.values())
    k = verdicts[wanted]
    lo, hi = wilson(k, n)
    print(
        f"  {name:34} {k:4d}/{n:<4d} = {100 * k / n:5.1f} %  (95 % CI {100 * lo:.1f}-"
        f"{100 * hi:.1f} %)   all verdicts: {dict(verdicts)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--via", choices=["pcscd", "inprocess"], default="pcscd")
    ap.add_argument("--sound", type=int, default=200, help="runs on the constant-time card")
    ap.add_argument("--leaky", type=int, default=50, help="runs on the early-exit card")
    ap.add_argument("--samples", type=int, default=300, help="per class, as the library")
    ap.add_argument("--load", type=int, default=2, help="busy processes beside it")
    args = ap.parse_args()
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for p in spinners:
        p.start()
    t = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for sub in ("a", "b"):
                (Path(tmp) / sub).mkdir()
            sound = series(args.via, "faithful", args.sound, args.samples, Path(tmp) / "a")
            leaky = series(
                args.via,
                "early-exit-compare:per_byte_delay_us=20",
                args.leaky,
                args.samples,
                Path(tmp) / "b",
            )
    finally:
        for p in spinners:
            p.terminate()
    print(
        f"leak test, {args.samples} samples per class, via {args.via}, {args.load} busy "
        f"processes, alpha {ALPHA:g} ({time.monotonic() - t:.0f} s):"
    )
    report("false positives (constant-time card)", sound, "leak")  # with the floor
    report("detections (early-exit, 20 µs/byte)", leaky, "leak")
    print(f"  inconclusive, constant-time card: {sound['inconclusive']}")
    floor = sound["pass, below the floor"]
    lo, hi = wilson(floor, sum(sound.values()))
    print(
        f"  significant but below {MIN_LEAK_US:g} µs (a pass), constant-time card: {floor} "
        f"(95 % CI {100 * lo:.1f}-{100 * hi:.1f} %)"
    )


if __name__ == "__main__":
    main()
