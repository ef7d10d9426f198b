"""A pytest plugin for runs that fail in ways nobody planned (``-p tests.host_faults``).

``PINLOOP_TEST_FAULT`` chooses the fault, on the first VERIFY of the run that presents the
PIN ``PINLOOP_TEST_FAULT_ON`` (so that the right PIN is in the frames of the traceback), or on
the third VERIFY with data without it:

- ``typeerror``: the transport raises a TypeError (a bug in a step or in the harness), with
  the PIN-bearing command and value in the frames of the traceback;
- ``card-crash``: the emulated card raises inside its comparison of the PIN (in-process and
  pcscd targets, where the card runs in this process);
- ``kill``: the emulator process named by ``PINLOOP_TEST_KILL_PID`` is killed (a crash of an
  emulator behind a real-reader target);
- ``stop``: that process is stopped with SIGSTOP (a card or emulator that hangs).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

_count = 0


def _third_verify(cmd: Any) -> bool:
    global _count
    if cmd.ins == 0x20 and cmd.data:
        on = os.environ.get("PINLOOP_TEST_FAULT_ON")
        if on is not None:
            hit = bytes(cmd.data) == on.encode() and _count == 0
            _count += hit
            return hit
        _count += 1
    return _count == 3


def pytest_configure(config: pytest.Config) -> None:
    fault = os.environ.get("PINLOOP_TEST_FAULT")
    if not fault:
        return
    from harness.emulator.card import EmulatedCard
    from harness.transport.inprocess import InProcessTransport
    from harness.transport.pcsc import PcscTransport

    for cls in (InProcessTransport, PcscTransport) if fault != "card-crash" else ():
        original = cls.transmit

        def transmit(self: Any, cmd: Any, _original: Any = original) -> Any:
            if _third_verify(cmd):
                if fault == "typeerror":
                    pin = cmd.data
                    raise TypeError(f"injected fault with {len(pin)} bytes in a frame")
                if fault == "kill":
                    os.kill(int(os.environ["PINLOOP_TEST_KILL_PID"]), signal.SIGKILL)
                if fault == "stop":  # stopped before the command goes, not while it is answered
                    from tests.support import freeze

                    freeze(int(os.environ["PINLOOP_TEST_KILL_PID"]))
            return _original(self, cmd)

        cls.transmit = transmit  # type: ignore[method-assign]
    if fault == "card-crash":
        matches = EmulatedCard._matches

        def crash(self: Any, secret: bytes, presented: bytes) -> bool:
            global _count
            _count += 1
            if _count == 3 or presented == os.environ.get("PINLOOP_TEST_FAULT_ON", "").encode():
                raise RuntimeError("the emulated card crashed while comparing")
            return matches(self, secret, presented)

        EmulatedCard._matches = crash  # type: ignore[method-assign]
