"""Reach a card by speaking vpcd's side of the link ourselves, without pcscd.

This is the role a card-emulator probe plays in a real reader's slot (over a serial line), and
what tests use over a pty or ``loop://``. Every receive has a deadline.

``pump``, when given, is called after each message sent: over ``loop://`` (where one port
echoes to itself) the test hands the emulator server its turn that way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.errors import CardRemoved, TransportTimeout
from harness.links.seriallink import LinkClosed, LinkTimeout, SerialLink
from harness.links.vpcd import CTRL_ATR, CTRL_OFF, CTRL_ON, CTRL_RESET
from harness.transport.base import DEFAULT_DEADLINE, exchange


class VpcdHostTransport:
    def __init__(
        self,
        link: SerialLink,
        *,
        deadline: float = DEFAULT_DEADLINE,
        pump: Callable[[], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.link = link
        self.name = name or f"vpcd host on {link.url}"
        self.deadline = deadline
        self._pump = pump
        self.last_wire_ns = 0
        self._atr = self.power_cycle()

    def _send(self, payload: bytes) -> None:
        try:
            self.link.send(payload)
        except LinkClosed as exc:
            raise CardRemoved(f"{self.name}: {exc}") from None
        if self._pump is not None:
            self._pump()

    def _receive(self) -> bytes:
        try:
            return self.link.receive(time.monotonic() + self.deadline)
        except LinkTimeout:
            raise TransportTimeout(f"{self.name}: no answer within {self.deadline} s") from None
        except LinkClosed as exc:
            raise CardRemoved(f"{self.name}: {exc}") from None

    def _request_atr(self) -> bytes:
        self._send(bytes((CTRL_ATR,)))
        self._atr = self._receive()
        return self._atr

    def _raw(self, raw: bytes) -> bytes:
        t = time.perf_counter_ns()
        try:
            self._send(raw)
            return self._receive()
        finally:
            self.last_wire_ns += time.perf_counter_ns() - t

    @property
    def atr(self) -> bytes:
        return self._atr

    def transmit(self, cmd: CommandAPDU) -> ResponseAPDU:
        self.last_wire_ns = 0
        return exchange(self._raw, cmd)

    def power_cycle(self) -> bytes:
        self._send(bytes((CTRL_OFF,)))
        self._send(bytes((CTRL_ON,)))
        return self._request_atr()

    def reset(self) -> bytes:
        self._send(bytes((CTRL_RESET,)))
        return self._request_atr()

    def close(self) -> None:
        with contextlib.suppress(CardRemoved):
            self._send(bytes((CTRL_OFF,)))
        self.link.close()
