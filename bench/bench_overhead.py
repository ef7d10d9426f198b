"""The harness's own timing overhead per APDU, measured side by side in one run.

For each path the same status query (``00 20 00 80``) goes out in interleaved blocks through
four layers, each timed from outside on the monotonic ns clock:

- **raw**: the bare call to the card (``EmulatedCard.transmit`` on bytes in-process; pyscard's
  ``SCardTransmit`` on the same connection through pcscd);
- **transport**: the harness's ``transmit()`` (APDU objects, deadline, T=0 handling, the wire
  clock);
- **guarded**: the same transport behind the real-card guard, as every APDU to a real card
  goes (selection and counter bookkeeping, the answer checked against its model);
- **runner**: ``Runner.tx`` as scenarios use it (also the trace line and the latency record).

It prints the median per layer, what each adds over raw, and the overhead the harness itself
records for every APDU (``ApduTime.overhead_us``: the runner's whole path from the previous
response to this one, minus the wire time at the transport), which is what reports show. The
runner's clock is restarted before each call here (``Runner.lab_done``, one clock read), so
that the other layers' turns between its blocks are not counted as its path.
``bench/bench_runner.py`` measures whole scenarios against raw pyscard. The latency figures
the checks use are the wire times, so this overhead is outside them; it matters for throughput
and for how close two commands can follow each other.

    .tox/check/bin/python bench/bench_overhead.py [--apdus 3000] [--no-pcscd]

The pcscd part needs root (it starts its own pcscd; the emulator runs in its own process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.apdu import commands as C
from harness.capabilities import EMULATED
from harness.cards.jpki import FACTS, PROFILE
from harness.emulator import EmulatedCard, MemoryStore, load_card_config, personalise
from harness.run.runner import Runner
from harness.safety.guard import RealCardGuard
from harness.scenario.model import Scenario
from harness.secret import Secret
from harness.targets import Target
from harness.transport.base import Transport
from harness.transport.inprocess import InProcessTransport

JPKI = bytes.fromhex("D392F000260100000001")


class _Bare(Target):
    """Just enough of a target for Runner.tx."""

    declared = EMULATED
    #: the bench's own emulated card (harness.safety.check_target)
    _pinloop_emulator = True

    def __init__(self, transport: Transport) -> None:
        self.name = transport.name
        self.transport = transport
        self.card_profile = PROFILE


def measure(layers: dict[str, Callable[[], object]], n: int, block: int = 100) -> dict[str, float]:
    """Median ns per call of each layer, blocks interleaved and their order rotated."""
    samples: dict[str, list[int]] = {name: [] for name in layers}
    names = list(layers)
    for name in names:  # warm-up
        for _ in range(200):
            layers[name]()
    for i in range(max(1, n // block)):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            f, out = layers[name], samples[name]
            for _ in range(block):
                t = time.perf_counter_ns()
                f()
                out.append(time.perf_counter_ns() - t)
    return {name: statistics.median(s) for name, s in samples.items()}


def report(path: str, medians: dict[str, float], runner: Runner) -> None:
    raw = medians["raw"]
    print(
        f"\n{path}: median µs per status query "
        f"({len(runner.session.latencies)} recorded by the runner)"
    )
    for name, m in medians.items():
        added = "" if name == "raw" else f"  +{(m - raw) / 1000:6.2f} µs over raw ({m / raw:.2f} x)"
        print(f"  {name:10} {m / 1000:8.2f}{added}")
    own = [a.overhead_us for a in runner.session.latencies]
    q = statistics.quantiles(own, n=100)
    print(
        f"  overhead the harness records per APDU (total - wire): median "
        f"{statistics.median(own):.2f} µs, p99 {q[98]:.2f} µs; "
        f"{100 * statistics.median(own) / (medians['runner'] / 1000):.1f} % of the runner's time"
    )


def clock_cost() -> float:
    n = 200_000
    t = time.perf_counter_ns()
    for _ in range(n):
        time.perf_counter_ns()
    return (time.perf_counter_ns() - t) / n


def _guarded(transport: Transport) -> RealCardGuard:
    """The real-card guard over ``transport``, with jpki-auth selected and its counter known."""
    config = load_card_config()
    guard = RealCardGuard(transport, FACTS, lambda pin: Secret(config.secrets()[pin].encode()))
    guard.transmit(C.select_df(JPKI))
    guard.transmit(C.select_ef(0x0018))
    guard.transmit(C.pin_status())
    return guard


def in_process(n: int) -> None:
    card = EmulatedCard(MemoryStore(personalise(load_card_config())))
    transport = InProcessTransport(card)
    runner = Runner(_Bare(transport), Scenario("bench", "bench", "bench", 1, ()))
    transport.transmit(C.select_df(JPKI))
    transport.transmit(C.select_ef(0x0018))
    cmd = C.pin_status()
    raw = cmd.to_bytes()
    guard = _guarded(transport)
    medians = measure(
        {
            "raw": lambda: card.transmit(raw),
            "transport": lambda: transport.transmit(cmd),
            "guarded": lambda: guard.transmit(cmd),
            "runner": lambda: (runner.session.lab_done(), runner.session.tx(cmd)),
        },
        n,
    )
    report("in-process (the emulated card called directly)", medians, runner)


def through_pcscd(n: int) -> None:
    from smartcard import scard as S

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for it
    from harness.lab.pcscd import Pcscd
    from harness.transport.pcsc import PcscTransport, wait_for_card
    from tests.emulator_process import EmulatorProcess

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        lab = Pcscd(tmp / "pcscd.log", slots=2)
        lab.start()
        proc = None
        try:
            slot = lab.slots[0]
            proc = EmulatorProcess(personalise(load_card_config()), tmp, slot.url, name="bench")
            wait_for_card(slot.reader, 5)
            with PcscTransport(slot.reader) as transport:
                runner = Runner(_Bare(transport), Scenario("bench", "bench", "bench", 1, ()))
                transport.transmit(C.select_df(JPKI))
                transport.transmit(C.select_ef(0x0018))
                cmd = C.pin_status()
                raw = list(cmd.to_bytes())
                handle, proto = transport._card, transport._protocol
                guard = _guarded(transport)
                medians = measure(
                    {
                        "raw": lambda: S.SCardTransmit(handle, proto, raw),
                        "transport": lambda: transport.transmit(cmd),
                        "guarded": lambda: guard.transmit(cmd),
                        "runner": lambda: (runner.session.lab_done(), runner.session.tx(cmd)),
                    },
                    n,
                )
                report(f"through pcscd + vpcd ({slot.reader})", medians, runner)
        finally:
            if proc is not None:
                proc.stop()
            lab.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--apdus", type=int, default=3000, help="per layer and path")
    ap.add_argument("--no-pcscd", action="store_true", help="in-process only")
    args = ap.parse_args()
    print(f"clock: time.perf_counter_ns() costs {clock_cost():.0f} ns per read")
    in_process(args.apdus * 10)
    if args.no_pcscd:
        return
    if os.geteuid() != 0:
        print("\nthrough pcscd: skipped (needs root to start its own pcscd)")
        return
    through_pcscd(args.apdus)


if __name__ == "__main__":
    main()
