"""The vpcd wire protocol (vsmartcard's virtual reader driver), as a stream codec.

Each message, either way: a 2-byte big-endian length, then that many bytes. From vpcd, a
1-byte message is a control code (power off/on, reset, get ATR); anything longer is a command
APDU. The card answers ATR requests and APDUs only, never with an empty message (that hangs
the reader). Messages may arrive split or merged, so the decoder is incremental.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from harness.errors import ConfigError, HarnessError

CTRL_OFF = 0x00
CTRL_ON = 0x01
CTRL_RESET = 0x02
CTRL_ATR = 0x04
CONTROL_NAMES = {
    CTRL_OFF: "power off",
    CTRL_ON: "power on",
    CTRL_RESET: "reset",
    CTRL_ATR: "get ATR",
}

MAX_PAYLOAD = 0xFFFF
DEFAULT_PORT = 35963  # vpcd's own: slot 0; slot n listens on DEFAULT_PORT + n
#: moves every vpcd port of a pcscd pinloop starts (two labs on one host, each in its own
#: mount namespace, need two port ranges; the harness's own parallel tests do that)
PORT_VARIABLE = "PINLOOP_VPCD_PORT"


def first_port() -> int:
    """The TCP port of slot 0: ``$PINLOOP_VPCD_PORT`` when set, else vpcd's 35963."""
    value = os.environ.get(PORT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_PORT
    if not value.isdigit() or not 1024 <= int(value) <= 65535 - 16:
        raise ConfigError(f"{PORT_VARIABLE}={value!r}: a TCP port from 1024 to 65519")
    return int(value)


class FramingError(HarnessError):
    """Bytes on a vpcd link that cannot be a vpcd message."""


def encode(payload: bytes) -> bytes:
    if not payload:
        raise FramingError("a vpcd message is never empty (it would hang the reader)")
    if len(payload) > MAX_PAYLOAD:
        raise FramingError(f"a vpcd message carries at most 65535 bytes, not {len(payload)}")
    return len(payload).to_bytes(2, "big") + payload


class Decoder:
    """Incremental decoder: :meth:`need` says how many bytes complete the next step."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._length: int | None = None

    def need(self) -> int:
        if self._length is None:
            return 2 - len(self._buf)
        return self._length - len(self._buf)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add bytes; yield every message they complete."""
        view = memoryview(data)
        while view:
            take = min(self.need(), len(view))
            self._buf += view[:take]
            view = view[take:]
            if self.need():
                continue
            if self._length is None:
                self._length = int.from_bytes(self._buf, "big")
                self._buf.clear()
                if self._length == 0:
                    self._length = None
                    raise FramingError("empty vpcd message")
                continue
            message = bytes(self._buf)
            self._buf.clear()
            self._length = None
            yield message

    @property
    def idle(self) -> bool:
        """No partial message is buffered."""
        return self._length is None and not self._buf
