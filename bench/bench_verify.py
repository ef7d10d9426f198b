"""In-process VERIFY throughput of the emulated card (goal: >= 20,000 VERIFY APDUs per second).

Runs every configuration side by side in one process and prints APDUs per second and the
ratio to the goal. Each VERIFY goes through ``EmulatedCard.transmit`` (bytes in, parse, card
OS, NVM writes, bytes out), as the links will call it.

    .tox/check/bin/python bench/bench_verify.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.apdu import commands as C
from harness.emulator import EmulatedCard, FileStore, MemoryStore, load_card_config, personalise
from harness.emulator.state import CardState

GOAL = 20_000


def _card(state: CardState, store: str, tmp: Path) -> EmulatedCard:
    if store == "memory":
        return EmulatedCard(MemoryStore(state))
    path = tmp / f"card-{store}.json"
    FileStore.create(path, state, overwrite=True)
    return EmulatedCard(
        FileStore.open(path, durability="host" if store == "file+fsync" else "process")
    )


def _workloads(secret: bytes) -> dict[str, list[bytes]]:
    wrong = b"0000" if secret != b"0000" else b"1111"
    return {
        # one VERIFY per entry; a cycle keeps the counter from ever blocking
        "status query": [C.pin_status().to_bytes()],
        "correct PIN": [C.verify(secret).to_bytes()],
        "wrong, then correct": [C.verify(wrong).to_bytes(), C.verify(secret).to_bytes()],
    }


def _rate(card: EmulatedCard, cycle: list[bytes], seconds: float) -> float:
    tx: Callable[[bytes], bytes] = card.transmit
    for raw in cycle * 200:  # warm-up
        tx(raw)
    n = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(500):
            for raw in cycle:
                tx(raw)
        n += 500 * len(cycle)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = ap.parse_args()
    config = load_card_config()
    template = personalise(config)
    secret = config.secrets()["jpki-auth"].encode()
    print(f"in-process VERIFY throughput, {args.seconds:.1f} s per cell, goal {GOAL:,}/s")
    print(f"{'store':12} {'workload':22} {'VERIFY/s':>10} {'× goal':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for store in ("memory", "file", "file+fsync"):
            state = personalise(config) if store != "memory" else template
            card = _card(state, store, Path(tmp))
            card.power_on()
            card.transmit(C.select_df(bytes.fromhex("D392F000260100000001")).to_bytes())
            card.transmit(C.select_ef(0x0018).to_bytes())
            for name, cycle in _workloads(secret).items():
                seconds = args.seconds if store != "file+fsync" else min(args.seconds, 0.3)
                rate = _rate(card, cycle, seconds)
                print(f"{store:12} {name:22} {rate:>10,.0f} {rate / GOAL:>7.2f}")
            card.store.close()
    print(
        "memory: NVM in RAM (unit tests); file: snapshot + O_APPEND journal, survives a kill "
        "of the emulator (default); file+fsync: also survives a host crash"
    )


if __name__ == "__main__":
    main()
