"""Keep the CPU cores busy, as another job on the same machine would.

    python3 bench/load.py [--procs N] [--seconds S]       # N busy processes (default: one
                                                          # per core), until S s or Ctrl-C
    python3 bench/load.py -- COMMAND ARG...               # COMMAND under that load; its
                                                          # exit status is ours

Each process spins on SHA-256 of a small buffer (pure CPU, no memory or disk traffic), at
normal priority: it competes for the cores with what is measured, on equal terms. Needs
nothing but the Python standard library, so it runs before any set-up.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Sequence


def _spin() -> None:
    data = b"\0" * 64
    while True:
        data = hashlib.sha256(data).digest()


class Load:
    """``procs`` busy processes while the ``with`` block runs."""

    def __init__(self, procs: int | None = None) -> None:
        self.procs = procs if procs is not None else len(os.sched_getaffinity(0))
        self._workers: list[multiprocessing.Process] = []

    def __enter__(self) -> Load:
        self._workers = [
            multiprocessing.Process(target=_spin, name="pinloop load", daemon=True)
            for _ in range(self.procs)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self._workers:
            worker.terminate()
        for worker in self._workers:
            worker.join(5)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=None, help="busy processes (default: cores)")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARG...")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with Load(args.procs) as load:
        print(f"[load] {load.procs} busy processes", file=sys.stderr, flush=True)
        if command:
            return subprocess.call(command)
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(args.seconds if args.seconds is not None else 1e9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
