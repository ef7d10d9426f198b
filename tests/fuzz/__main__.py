"""Run a fuzz target under atheris (coverage-guided, libFuzzer) until a budget is spent.

    python -m tests.fuzz card --apdus 1000000            # the emulated card, 1M APDUs
    python -m tests.fuzz responses --inputs 200000       # the harness's response parsing
    python -m tests.fuzz scenarios --inputs 20000        # mutated scenario files
    python -m tests.fuzz card --apdus 200000 --defect no-decrement   # must find it

It prints one summary line (count, duration, rate) and exits 0 when the budget is spent
without a finding. A finding prints the oracle's message and the input, and exits non-zero
(libFuzzer writes the input to ./crash-*; ``--artifacts DIR`` puts it elsewhere).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import atheris


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz")
    ap.add_argument("target", choices=["card", "responses", "scenarios"])
    ap.add_argument("--apdus", type=int, default=0, help="card: stop after this many APDUs")
    ap.add_argument("--inputs", type=int, default=0, help="stop after this many inputs")
    ap.add_argument("--defect", default="faithful", help="card: a defect profile to find")
    ap.add_argument("--accept-any-pin", action="store_true", help="card: a planted bug to find")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--artifacts", default=os.environ.get("TMPDIR", "/tmp") + "/")
    args = ap.parse_args()

    with atheris.instrument_imports(include=["harness"]):
        from harness.emulator import parse_profile
        from tests.fuzz import targets
    targets.Settings.defects = parse_profile(args.defect)
    targets.Settings.accept_any_pin = args.accept_any_pin
    target = targets.TARGETS[args.target]
    budget_apdus = args.apdus if args.target == "card" else 0
    budget_inputs = args.inputs or (0 if budget_apdus else 10_000)
    count = {"inputs": 0, "units": 0}
    start = time.monotonic()

    def done() -> None:
        took = time.monotonic() - start
        unit = "APDUs" if args.target == "card" else "inputs"
        print(
            f"fuzz {args.target}: {count['units']} {unit} in {count['inputs']} inputs, "
            f"{took:.1f} s ({count['units'] / took:,.0f} {unit}/s), no finding",
            flush=True,
        )
        os._exit(0)  # libFuzzer has no clean stop from inside a run

    def one(data: bytes) -> None:
        count["units"] += target(atheris.FuzzedDataProvider(data))
        count["inputs"] += 1
        if (budget_apdus and count["units"] >= budget_apdus) or (
            budget_inputs and count["inputs"] >= budget_inputs
        ):
            done()

    atheris.Setup(
        [sys.argv[0], f"-seed={args.seed}", "-max_len=4096", f"-artifact_prefix={args.artifacts}"],
        one,
    )
    atheris.Fuzz()


if __name__ == "__main__":
    main()
