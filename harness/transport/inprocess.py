"""The emulated card called directly: no reader, no link (fast unit tests)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.transport.base import exchange

if TYPE_CHECKING:
    from harness.cards.emulated import CardEmulator


class InProcessTransport:
    def __init__(self, card: CardEmulator, name: str = "in-process") -> None:
        self.card = card
        self.name = name
        self.last_wire_ns = 0
        self._atr = card.power_on() if not card.powered else card.atr

    @property
    def atr(self) -> bytes:
        return self._atr

    def transmit(self, cmd: CommandAPDU) -> ResponseAPDU:
        self.last_wire_ns = 0
        return exchange(self._send, cmd)

    def _send(self, raw: bytes) -> bytes:
        t = time.perf_counter_ns()
        try:
            return self.card.transmit(raw)
        finally:
            self.last_wire_ns += time.perf_counter_ns() - t

    def power_cycle(self) -> bytes:
        self.card.power_off()
        self._atr = self.card.power_on()
        return self._atr

    def reset(self) -> bytes:
        self._atr = self.card.reset()
        return self._atr

    def close(self) -> None:
        self.card.power_off()
