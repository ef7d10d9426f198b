"""A byte stream to the other end of a vpcd link, over any pyserial URL.

``socket://127.0.0.1:35963`` (vpcd inside pcscd), a serial device such as ``/dev/ttyUSB0`` (a
card-emulator probe in a real reader's slot), a pty (tests) or ``loop://``. Reads never ask for
more bytes than the decoder needs, so an EOF cannot swallow a following message (pyserial drops
the bytes of a ``read()`` that ends in EOF). Every read has a deadline.

Latency: Debian 12's vpcd writes length and payload in two ``send()`` calls without
``TCP_NODELAY``; if the emulator's kernel delays its ACK, each message stalls ~44 ms. So on TCP
the link sets ``TCP_NODELAY`` once and ``TCP_QUICKACK`` before every read (the option is not
sticky). ``quickack=False`` exists only to measure the difference.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import serial

from harness.errors import HarnessError
from harness.links.vpcd import Decoder, encode

#: how long one blocking read waits before the link checks its stop flag / deadline
POLL_INTERVAL = 0.05


class LinkClosed(HarnessError):
    """The other end closed the link (pcscd stopped, card removed, probe unplugged)."""


class LinkTimeout(HarnessError):
    """No complete message arrived before the deadline."""


class SerialLink:
    """A vpcd message stream over a pyserial port."""

    def __init__(self, port: serial.SerialBase, *, url: str, quickack: bool = True) -> None:
        self.url = url
        self._port = port
        self._decoder = Decoder()
        self._closed = False
        self._pending: list[bytes] = []
        self._sock: socket.socket | None = getattr(port, "_socket", None)
        self._quickack = quickack and self._sock is not None and hasattr(socket, "TCP_QUICKACK")
        if self._sock is not None:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @classmethod
    def open(cls, url: str, *, quickack: bool = True, baudrate: int = 115200) -> SerialLink:
        """Open ``url``; a refused connection or missing device is a :class:`LinkClosed`."""
        try:
            port = serial.serial_for_url(
                url, timeout=POLL_INTERVAL, baudrate=baudrate, do_not_open=True
            )
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkClosed(f"cannot open {url}: {exc}") from None
        return cls(port, url=url, quickack=quickack)

    # -- sending ---------------------------------------------------------------------------
    def send(self, payload: bytes) -> None:
        if self._closed:
            raise LinkClosed(f"{self.url}: closed")
        try:
            self._port.write(encode(payload))
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            raise LinkClosed(f"{self.url}: write failed: {exc}") from None
        except (TypeError, AttributeError, ValueError):  # closed under us by another thread
            raise LinkClosed(f"{self.url}: closed") from None

    # -- receiving -------------------------------------------------------------------------
    def messages(self, stop: Callable[[], bool] | None = None) -> Iterator[bytes]:
        """Messages as they arrive, until the link closes or ``stop()`` is true."""
        while True:
            while self._pending:
                yield self._pending.pop(0)
            if stop is not None and stop():
                return
            self._read_step()

    def receive(self, deadline: float) -> bytes:
        """The next message, or :class:`LinkTimeout` at ``deadline`` (``time.monotonic``)."""
        while not self._pending:
            if time.monotonic() >= deadline:
                raise LinkTimeout(f"{self.url}: no message before the deadline")
            self._read_step()
        return self._pending.pop(0)

    def _read_step(self) -> None:
        if self._closed:
            raise LinkClosed(f"{self.url}: closed")
        if self._quickack:
            assert self._sock is not None
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        try:
            chunk = self._port.read(self._decoder.need())
        except (serial.SerialException, OSError) as exc:
            raise LinkClosed(f"{self.url}: {exc}") from None
        except (TypeError, AttributeError, ValueError):  # closed under us by another thread
            raise LinkClosed(f"{self.url}: closed") from None
        if chunk:
            self._pending.extend(self._decoder.feed(chunk))

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            if self._sock is not None:
                # pyserial's close() sleeps 0.3 s "for quick reconnects"; shut down first so
                # the peer sees the card leave at once
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
                self._sock.close()
                self._port._socket = None  # type: ignore[attr-defined]
                self._port.is_open = False
            else:
                self._port.close()
