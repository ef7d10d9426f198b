"""Scenario loading time against the number of steps (goal: linear).

Writes scenario files of 10,000, 50,000 and 100,000 steps (a select, then status and verify
steps with expectations, as the library's files have), loads each with ``load_scenarios``
and prints the time per step side by side: the YAML parse (ruamel's round-trip loader) and
the rest (schema of every step, building the model). A per-step ratio near 1.0 against the
smallest file is linear; loading was quadratic before (each step's snippet split the whole
file into lines: 10,000 steps 6 s, 20,000 steps 22 s).

    .venv/bin/python bench/bench_load.py [--steps 10000,50000,100000]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.config import load_yaml
from harness.scenario import load_scenarios

STEPS = (
    "  - status: {}\n    expect: {tries: max}",
    "  - verify: {value: right}\n    expect: {sw: ok, tries: unchanged}",
    "  - verify: {value: wrong, repeat: 2}\n    note: two wrong\n    expect: {sw: 63Cx}",
    "  - verify: {value: right}\n    expect: {sw: ok, tries: max}",
)


def scenario(steps: int) -> str:
    lines = [
        "name: load bench for {pin}",
        "rule: load-bench",
        "for_each: {pin: [jpki-auth]}",
        "steps:",
        '  - select: {pin: "{pin}"}',
    ]
    lines += [STEPS[i % len(STEPS)] for i in range(steps - 1)]
    return "\n".join(lines) + "\n"


def _timed(fn: Callable[[Path], object], path: Path) -> float:
    gc.collect()
    start = time.perf_counter()
    fn(path)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="10000,50000,100000", help="comma-separated sizes")
    args = ap.parse_args()
    sizes = [int(s) for s in args.steps.split(",")]
    print("load_scenarios against the number of steps (per-step ratio 1.0 = linear)")
    print(
        f"{'steps':>8} {'KB':>7} {'total s':>8} {'YAML s':>7} {'rest s':>7} "
        f"{'µs/step':>8} {'YAML µs':>8} {'rest µs':>8} {'ratio':>6}"
    )
    first: float | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"bench-{n}.pin.yaml"
            path.write_text(scenario(n), encoding="utf-8")
            parse = _timed(load_yaml, path)
            total = _timed(load_scenarios, path)
            per = total / n * 1e6
            first = first or per
            rest = max(0.0, total - parse)
            print(
                f"{n:>8,} {path.stat().st_size / 1024:>7,.0f} {total:>8.2f} {parse:>7.2f} "
                f"{rest:>7.2f} {per:>8.0f} {parse / n * 1e6:>8.0f} {rest / n * 1e6:>8.0f} "
                f"{per / first:>6.2f}"
            )
            path.unlink()


if __name__ == "__main__":
    main()
