"""Per-APDU time through the real PC/SC stack, measured side by side in one run.

1. Raw pyscard ``SCardTransmit`` versus the harness's ``PcscTransport.transmit`` on the same
   connection and the same APDU stream, interleaved in blocks (goal: harness <= 1.10 x raw).
2. The vpcd round trip with the emulator's latency settings (TCP_QUICKACK before every read,
   TCP_NODELAY) and without them.

Needs root (it starts its own pcscd) and the Debian packages ``./run test`` installs. The
emulators run as separate ``pinloop emulate`` processes, as they would in a lab.

    .tox/check/bin/python bench/bench_pcsc.py [--apdus 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from smartcard import scard as S

from harness.apdu import commands as C
from harness.emulator import load_card_config, personalise

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for it
from harness.lab.pcscd import Pcscd
from harness.transport.pcsc import PcscTransport, wait_for_card
from tests.emulator_process import EmulatorProcess


def pct(samples: list[int], q: float) -> float:
    return sorted(samples)[int(q * (len(samples) - 1))] / 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--apdus", type=int, default=3000, help="per side for the ratio")
    ap.add_argument("--slow-apdus", type=int, default=40, help="without QUICKACK (44 ms each)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        lab = Pcscd(tmp / "pcscd.log", slots=2)
        lab.start()
        procs = []
        try:
            fast, slow = lab.slots
            card = personalise(load_card_config())
            procs.append(EmulatorProcess(card, tmp, fast.url, name="fast"))
            procs.append(
                EmulatorProcess(card, tmp, slow.url, name="slow", extra=("--no-quickack",))
            )
            wait_for_card(fast.reader, 5)
            wait_for_card(slow.reader, 5)
            run(fast.reader, slow.reader, args.apdus, args.slow_apdus)
        finally:
            for p in procs:
                p.stop()
            lab.stop()


def run(fast_reader: str, slow_reader: str, n: int, n_slow: int) -> None:
    cmd = C.pin_status()
    raw_apdu = list(cmd.to_bytes())
    with PcscTransport(fast_reader) as transport:
        transport.transmit(C.select_df(bytes.fromhex("D392F000260100000001")))
        transport.transmit(C.select_ef(0x0018))
        handle, proto = transport._card, transport._protocol

        def raw() -> None:
            rv, _resp = S.SCardTransmit(handle, proto, raw_apdu)
            assert rv == S.SCARD_S_SUCCESS

        def harness() -> None:
            assert transport.transmit(cmd).sw == 0x63C3

        samples: dict[str, list[int]] = {"raw SCardTransmit": [], "harness transport": []}
        for f in (raw, harness):
            for _ in range(100):
                f()
        block = 100
        sides = [("raw SCardTransmit", raw), ("harness transport", harness)]
        for i in range(n // block):  # interleaved blocks, alternating which side goes first
            for name, f in sides if i % 2 == 0 else sides[::-1]:
                out = samples[name]
                for _ in range(block):
                    t = time.perf_counter_ns()
                    f()
                    out.append(time.perf_counter_ns() - t)
    print(
        f"PC/SC round trip to the emulated card (pcscd + vpcd, emulator in its own process), "
        f"{n} APDUs per side, status query 00 20 00 80"
    )
    print(f"{'path':22} {'median µs':>10} {'p10':>8} {'p90':>8} {'p99':>8}")
    for name, s in samples.items():
        print(
            f"{name:22} {statistics.median(s) / 1000:>10.1f} {pct(s, 0.1):>8.1f} "
            f"{pct(s, 0.9):>8.1f} {pct(s, 0.99):>8.1f}"
        )
    ratio = statistics.median(samples["harness transport"]) / statistics.median(
        samples["raw SCardTransmit"]
    )
    print(f"harness / raw median: {ratio:.3f} x (goal <= 1.10)")

    with PcscTransport(slow_reader) as slow:
        t_slow = []
        for _ in range(n_slow):
            t = time.perf_counter_ns()
            slow.transmit(cmd)
            t_slow.append(time.perf_counter_ns() - t)
    fast_median = statistics.median(samples["harness transport"]) / 1000
    slow_median = statistics.median(t_slow) / 1000
    print(
        f"vpcd round trip, harness transport: with QUICKACK+NODELAY {fast_median:.1f} µs, "
        f"without {slow_median:.1f} µs ({n_slow} APDUs): {slow_median / fast_median:.0f} x"
    )


if __name__ == "__main__":
    main()
