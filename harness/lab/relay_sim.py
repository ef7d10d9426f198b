"""A simulated power relay on a pty, speaking the protocol of :mod:`harness.lab.power`.

Tests and dry runs use it in place of the hardware: ``SerialRelay(sim.path)`` talks to it as it
would to ``/dev/ttyUSB0``. Each channel can be wired to a callback (``on_change(on)``), which the
emulated targets use to take power away from the emulated card. Knobs for the harness's own
tests: ``mute`` (never answers) and ``garble`` (answers nonsense).
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import threading
import tty
from collections.abc import Callable

CHANNELS = range(1, 17)


class SimulatedRelay:
    def __init__(self, identity: str = "pinloop simulated relay 1") -> None:
        self.identity = identity
        self.powered = dict.fromkeys(CHANNELS, True)
        self.wiring: dict[int, Callable[[bool], None]] = {}
        self.log: list[str] = []
        self.mute = False
        self.garble = False
        self._master, slave = pty.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave  # kept open so the pty survives clients closing it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="relay-sim", daemon=True)
        self._thread.start()

    def wire(self, channel: int, on_change: Callable[[bool], None]) -> None:
        self.wiring[channel] = on_change

    def answer(self, line: str) -> str:
        words = line.split()
        if words == ["PING"]:
            return f"PONG {self.identity}"
        if len(words) == 2 and words[0] in ("ON", "OFF", "STATE") and words[1].isdigit():
            channel = int(words[1])
            if channel not in self.powered:
                return f"ERR no channel {channel}"
            if words[0] == "STATE":
                return f"{'ON' if self.powered[channel] else 'OFF'} {channel}"
            on = words[0] == "ON"
            if self.powered[channel] != on:
                self.powered[channel] = on
                if channel in self.wiring:
                    self.wiring[channel](on)
            return f"OK {words[0]} {channel}"
        return f"ERR unknown command {line!r}"

    def _serve(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 256)
            except OSError:
                return
            buffer += chunk
            while b"\n" in buffer:
                raw, _, buffer = buffer.partition(b"\n")
                line = raw.decode("ascii", "replace").strip()
                if not line:
                    continue
                self.log.append(line)
                if self.mute:
                    continue
                reply = "#%&*! garbled" if self.garble else self.answer(line)
                with contextlib.suppress(OSError):
                    os.write(self._master, reply.encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
