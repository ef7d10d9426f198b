"""Scenario loading time against the number of steps (goal: linear).

Writes scenario files of 10,000, 50,000 and 100,000 steps (a select, then status and verify
steps with expectations, as the library's files have), loads each with ``load_scenarios``
and prints the time per step side by side: all of it, the YAML parse (ruamel's round-trip
loader) and the rest (schema of every step, building the model: ``load_scenarios`` given the
parsed document), with the ratio of the time per step to the smallest file's. A ratio near
1.0 is linear; loading was quadratic before (each step's snippet split the whole file into
lines: 10,000 steps 6 s, 20,000 steps 22 s).
Times are CPU seconds of this process (the machine may be shared), wall seconds beside.

    .tox/check/bin/python bench/bench_load.py [--steps 10000,50000,100000]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.config import load_yaml
from harness.scenario import load_scenarios, loader

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


def _timed(fn: Callable[[Path], object], path: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``fn(path)``."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    fn(path)
    return time.process_time() - cpu, time.perf_counter() - wall


def _without_parse(path: Path) -> float:
    """CPU seconds of ``load_scenarios(path, JPKI)`` given the document already parsed."""
    doc = load_yaml(path)
    loader.load_yaml = lambda _: doc  # type: ignore[assignment]
    try:
        return _timed(load_scenarios, path)[0]
    finally:
        loader.load_yaml = load_yaml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="10000,50000,100000", help="comma-separated sizes")
    args = ap.parse_args()
    sizes = [int(s) for s in args.steps.split(",")]
    print("load_scenarios against the number of steps (ratio of µs/step; 1.0 = linear)")
    print(
        f"{'steps':>8} {'KB':>6} {'CPU s':>7} {'wall s':>7} {'µs/step':>8} {'ratio':>6} "
        f"{'YAML µs':>8} {'ratio':>6} {'rest µs':>8} {'ratio':>6}"
    )
    first: tuple[float, float, float] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"bench-{n}.pin.yaml"
            path.write_text(scenario(n), encoding="utf-8")
            rest = _without_parse(path)
            total, wall = _timed(load_scenarios, path)
            per = (total / n * 1e6, (total - rest) / n * 1e6, rest / n * 1e6)
            first = first or per
            print(
                f"{n:>8,} {path.stat().st_size / 1024:>6,.0f} {total:>7.1f} {wall:>7.1f} "
                + " ".join(f"{p:>8.0f} {p / f:>6.2f}" for p, f in zip(per, first, strict=True))
            )
            path.unlink()


if __name__ == "__main__":
    main()
