"""The emulated card called directly: no reader, no link (fast unit tests)."""

from __future__ import annotations

from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.emulator import EmulatedCard
from harness.transport.base import exchange


class InProcessTransport:
    def __init__(self, card: EmulatedCard, name: str = "in-process") -> None:
        self.card = card
        self.name = name
        self._atr = card.power_on() if not card.powered else card.atr

    @property
    def atr(self) -> bytes:
        return self._atr

    def transmit(self, cmd: CommandAPDU) -> ResponseAPDU:
        return exchange(self.card.transmit, cmd)

    def power_cycle(self) -> bytes:
        self.card.power_off()
        self._atr = self.card.power_on()
        return self._atr

    def reset(self) -> bytes:
        self._atr = self.card.reset()
        return self._atr

    def close(self) -> None:
        self.card.power_off()
