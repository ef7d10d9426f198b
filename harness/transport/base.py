"""What every transport offers, and the T=0 response handling they share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.errors import APDUFormatError

#: default deadline of one call to a card or reader, in seconds
DEFAULT_DEADLINE = 5.0
#: GET RESPONSE / 6Cxx rounds before the card is declared to loop
MAX_CHAINED_RESPONSES = 64


class Transport(Protocol):
    """A way to reach one card. Every call returns or raises a TransportError in time."""

    name: str
    #: ns the last transmit() spent in the call to the card itself (SCardTransmit, the link
    #: round trip, the emulator), on the monotonic clock; the rest is the harness's overhead
    last_wire_ns: int

    @property
    def atr(self) -> bytes: ...

    def transmit(self, cmd: CommandAPDU) -> ResponseAPDU: ...

    def power_cycle(self) -> bytes:
        """Cold reset (power off, power on); the new ATR."""

    def reset(self) -> bytes:
        """Warm reset; the new ATR."""

    def close(self) -> None: ...


def exchange(send: Callable[[bytes], bytes], cmd: CommandAPDU) -> ResponseAPDU:
    """Send ``cmd`` and resolve the T=0 procedures ``61 xx`` (GET RESPONSE) and ``6C xx``.

    ``send`` carries raw bytes both ways. A T=1 card such as the My Number card never asks
    for them, but readers in T=0 or some drivers do.
    """
    raw = send(cmd.to_bytes())
    if len(raw) >= 2 and raw[-2] not in (0x61, 0x6C):  # the common case: one exchange
        return ResponseAPDU(raw[:-2], (raw[-2] << 8) | raw[-1])
    resp = ResponseAPDU.parse(raw)
    # 6C xx: send again with the right Le - only a command with no data (case 2), which
    # reads; a command with data would be carried out twice (a VERIFY would cost two tries)
    if resp.sw1 == 0x6C and cmd.le is not None and not cmd.data:
        retry = CommandAPDU(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, le=resp.sw2 or 256)
        resp = ResponseAPDU.parse(send(retry.to_bytes()))
    data = bytearray(resp.data)
    rounds = 0
    while resp.sw1 == 0x61:
        rounds += 1
        if rounds > MAX_CHAINED_RESPONSES:  # found by fuzzing: 61xx used to reach the caller
            raise APDUFormatError(
                f"the card answered 61xx more than {MAX_CHAINED_RESPONSES} times in a row"
            )
        get = CommandAPDU(cmd.cla & 0x03, 0xC0, 0x00, 0x00, le=resp.sw2 or 256)
        resp = ResponseAPDU.parse(send(get.to_bytes()))
        data += resp.data
    return ResponseAPDU(bytes(data), resp.sw)
