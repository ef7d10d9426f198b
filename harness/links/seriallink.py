"""A byte stream to the other end of a vpcd link, over any pyserial URL.

``socket://127.0.0.1:35963`` (vpcd inside pcscd), a serial device such as ``/dev/ttyUSB0`` (a
card-emulator probe in a real reader's slot), a pty (tests) or ``loop://``. Reads never ask for
more bytes than the decoder needs, so an EOF cannot swallow a following message (pyserial drops
the bytes of a ``read()`` that ends in EOF). Every read has a deadline.

Latency: Debian 12's vpcd writes length and payload in two ``send()`` calls without
``TCP_NODELAY``; if the emulator's kernel delays its ACK, each message stalls ~44 ms. So on TCP
the link sets ``TCP_NODELAY`` once and ``TCP_QUICKACK`` whenever a read leaves a message
incomplete (the option is not sticky; setting it sends the pending ACK, so vpcd's held-back
payload comes at once). ``quickack=False`` exists only to measure the difference.

On TCP (``socket://``) the link opens the connection itself and bypasses pyserial's
select-based reads and writes, which cost ~8 system calls per APDU: the socket blocks with a
kernel receive timeout (``SO_RCVTIMEO``, the poll interval), each read is one ``recv_into`` into
a preallocated buffer holding as many frames as arrived, and each message goes out in one
``sendall`` (length and payload together): 4 calls per APDU (receive the length, set
``TCP_QUICKACK``, receive the payload, send the answer).

Opening it itself matters more than the speed: pyserial's ``socket://`` open ends by discarding
whatever has arrived. vpcd asks for the ATR the moment it accepts a card and then waits for the
answer with no timeout, so a request that lands in that window was thrown away and reader and
card waited on each other for ever. Nothing that arrives after the connection is up is dropped.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterator

import serial

from harness.errors import HarnessError
from harness.links.vpcd import MAX_PAYLOAD, Decoder, FramingError, encode

#: how long one blocking read waits before the link checks its stop flag / deadline
POLL_INTERVAL = 0.05
#: how long a TCP connect may take (pyserial's own connect timeout)
CONNECT_TIMEOUT = 5.0


class LinkClosed(HarnessError):
    """The other end closed the link (pcscd stopped, card removed, probe unplugged)."""


class LinkTimeout(HarnessError):
    """No complete message arrived before the deadline."""


class SerialLink:
    """A vpcd message stream over a pyserial port."""

    def __init__(
        self,
        port: serial.SerialBase | None = None,
        *,
        url: str,
        quickack: bool = True,
        sock: socket.socket | None = None,
    ) -> None:
        """A link on an open pyserial ``port`` or, for TCP, on a connected ``sock``."""
        if (port is None) == (sock is None):
            raise ValueError("a link needs a port or a socket, not both")
        self.url = url
        self._port = port
        self._decoder = Decoder()
        self._closed = False
        self._pending: list[bytes] = []
        self._sock = sock
        self._quickack = quickack and self._sock is not None and hasattr(socket, "TCP_QUICKACK")
        #: received bytes not yet framed (TCP only): ``_buf[_start:_end]``
        self._buf = bytearray()
        self._start = self._end = 0
        if self._sock is not None:
            sock = self._sock
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # blocking, with the wait bounded by the kernel: one recv per read, no poll first
            sock.setblocking(True)
            usec = int(POLL_INTERVAL * 1e6)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, usec))
            # and a send that the other end never takes (its buffers full) fails, never hangs
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 5, 0))
            self._buf = bytearray(2 * (2 + MAX_PAYLOAD))

    @property
    def _serial(self) -> serial.SerialBase:
        """The pyserial port of a non-TCP link."""
        if self._port is None:
            raise LinkClosed(f"{self.url}: not a serial port")
        return self._port

    @classmethod
    def open(cls, url: str, *, quickack: bool = True, baudrate: int = 115200) -> SerialLink:
        """Open ``url``; a refused connection or missing device is a :class:`LinkClosed`."""
        try:
            port = serial.serial_for_url(
                url, timeout=POLL_INTERVAL, baudrate=baudrate, do_not_open=True
            )
            if url.lower().startswith("socket://"):
                # pyserial parses the URL (and its options); the connection is ours
                host, tcp_port = port.from_url(url)  # type: ignore[attr-defined]
                sock = socket.create_connection((host, tcp_port), timeout=CONNECT_TIMEOUT)
                try:
                    return cls(url=url, quickack=quickack, sock=sock)
                except BaseException:
                    sock.close()
                    raise
            port.open()
        except Exception as exc:  # pyserial's URL parsing raises TypeError, KeyError too
            raise LinkClosed(f"cannot open {url}: {type(exc).__name__}: {exc}") from None
        return cls(port, url=url, quickack=quickack)

    # -- sending ---------------------------------------------------------------------------
    def send(self, payload: bytes) -> None:
        if self._closed:
            raise LinkClosed(f"{self.url}: closed")
        if self._sock is not None:
            try:
                self._sock.sendall(encode(payload))
            except OSError as exc:
                raise LinkClosed(f"{self.url}: write failed: {exc}") from None
            return
        try:
            self._serial.write(encode(payload))
            self._serial.flush()
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
        if self._sock is not None:
            self._recv_step(self._sock)
            return
        try:
            chunk = self._serial.read(self._decoder.need())
        except (serial.SerialException, OSError) as exc:
            raise LinkClosed(f"{self.url}: {exc}") from None
        except (TypeError, AttributeError, ValueError):  # closed under us by another thread
            raise LinkClosed(f"{self.url}: closed") from None
        if chunk:
            self._pending.extend(self._decoder.feed(chunk))

    def _recv_step(self, sock: socket.socket) -> None:
        """One ``recv_into`` (waits up to the poll interval); frames every complete message."""
        buf, start, end = self._buf, self._start, self._end
        if start == end:
            start = end = 0
        elif len(buf) - end < 2 + MAX_PAYLOAD:  # room for a whole frame after what is kept
            buf[: end - start] = buf[start:end]
            start, end = 0, end - start
        try:
            got = sock.recv_into(memoryview(buf)[end:])
        except (BlockingIOError, InterruptedError):  # the poll interval passed: no bytes
            self._start, self._end = start, end
            return
        except OSError as exc:
            raise LinkClosed(f"{self.url}: {exc}") from None
        if not got:
            raise LinkClosed(f"{self.url}: connection closed by the other end")
        end += got
        while end - start >= 2:
            length = (buf[start] << 8) | buf[start + 1]
            if length == 0:
                self._start = self._end = 0
                raise FramingError("empty vpcd message")
            if end - start < 2 + length:
                break
            self._pending.append(bytes(buf[start + 2 : start + 2 + length]))
            start += 2 + length
        self._start, self._end = start, end
        if start != end and self._quickack:
            # a message is incomplete: its sender may hold the rest back until we ACK
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            if self._sock is not None:
                # shut down first so that the peer sees the card leave at once
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
                self._sock.close()
            elif self._port is not None:
                self._port.close()
