"""A card in a PC/SC reader (real or virtual) through pyscard's ``smartcard.scard`` layer.

- Exclusive access by default: no other process can talk to the card during a test.
- Every call has a deadline. pcsc-lite's ``SCardTransmit`` has none of its own (a hung
  emulator or driver blocks it forever). Calls run in the caller's thread; one watchdog
  thread per process breaks a call that overruns its deadline by shutting down the socket
  of that connection's context (see :func:`establish_context`); the call returns, the
  transport is broken, and :class:`~harness.errors.TransportTimeout` is raised. The hot
  path costs two attribute writes, not a thread hand-off.
- PC/SC error codes become typed errors: card removed, card reset, no card, reader gone,
  sharing violation, daemon gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

from smartcard import scard as S

from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.errors import (
    CardRemoved,
    CardReset,
    DaemonGone,
    NoCard,
    ReaderGone,
    SharingViolation,
    TransportError,
    TransportTimeout,
)
from harness.transport.base import DEFAULT_DEADLINE, exchange

T = TypeVar("T")


def _u32(rv: int) -> int:
    return rv & 0xFFFFFFFF


_ERRORS: dict[int, type[TransportError]] = {
    _u32(S.SCARD_W_REMOVED_CARD): CardRemoved,
    _u32(S.SCARD_E_NOT_TRANSACTED): CardRemoved,
    _u32(S.SCARD_W_UNPOWERED_CARD): CardRemoved,
    _u32(S.SCARD_W_UNRESPONSIVE_CARD): CardRemoved,
    _u32(S.SCARD_W_RESET_CARD): CardReset,
    _u32(S.SCARD_E_NO_SMARTCARD): NoCard,
    _u32(S.SCARD_E_UNKNOWN_READER): ReaderGone,
    _u32(S.SCARD_E_READER_UNAVAILABLE): ReaderGone,
    _u32(S.SCARD_E_NO_READERS_AVAILABLE): ReaderGone,
    _u32(S.SCARD_E_SHARING_VIOLATION): SharingViolation,
    _u32(S.SCARD_E_NO_SERVICE): DaemonGone,
    _u32(S.SCARD_F_COMM_ERROR): DaemonGone,
    _u32(S.SCARD_E_SERVICE_STOPPED): DaemonGone,
    _u32(S.SCARD_E_INVALID_HANDLE): DaemonGone,
    _u32(S.SCARD_E_TIMEOUT): TransportTimeout,
}


def check(rv: int, what: str, reader: str) -> None:
    if rv == S.SCARD_S_SUCCESS:
        return
    code = _u32(rv)
    kind = _ERRORS.get(code, TransportError)
    raise kind(f"{reader}: {what}: {S.SCardGetErrorMessage(rv)} (0x{code:08X})")


_ESTABLISH_LOCK = threading.Lock()
PCSCD_SOCKET = "/run/pcscd/pcscd.comm"


def _pcscd_socket_fds() -> set[int]:
    """File descriptors of this process connected to the pcscd socket."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if probe.family == socket.AF_UNIX and probe.getpeername() == PCSCD_SOCKET:
                found.add(fd)
        except OSError:
            pass
        finally:
            probe.close()
    return found


def establish_context(what: str) -> tuple[int, socket.socket | None]:
    """A PC/SC context and a handle on its own socket to pcscd (``None`` if not found).

    pcsc-lite gives every context its own UNIX socket; shutting that socket down makes a
    call blocked on it return ``SCARD_F_COMM_ERROR``. That is how a deadline is enforced on
    calls that pcsc-lite itself never times out.
    """
    with _ESTABLISH_LOCK:
        before = _pcscd_socket_fds()
        rv, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
        check(rv, "establish context", what)
        new = _pcscd_socket_fds() - before
    sock = socket.socket(fileno=os.dup(new.pop())) if len(new) == 1 else None
    return ctx, sock


class _Watchdog:
    """One thread for the whole process: breaks calls that overrun their deadline."""

    TICK = 0.02

    def __init__(self) -> None:
        self._watched: weakref.WeakSet[PcscTransport] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, transport: PcscTransport) -> None:
        with self._lock:
            self._watched.add(transport)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pcsc watchdog", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                watched = list(self._watched)
            for transport in watched:
                due = transport._due
                if due is not None and now > due:
                    transport._break()


_WATCHDOG = _Watchdog()


def list_readers(deadline: float = DEFAULT_DEADLINE) -> list[str]:
    """Reader names known to the PC/SC daemon (``[]`` when none)."""
    ctx, sock = establish_context("pcscd")
    if sock is not None:
        sock.close()
    try:
        rv, readers = S.SCardListReaders(ctx, [])
        if _u32(rv) == _u32(S.SCARD_E_NO_READERS_AVAILABLE):
            return []
        check(rv, "list readers", "pcscd")
        return list(readers)
    finally:
        S.SCardReleaseContext(ctx)


def wait_for_card(reader: str, timeout: float, *, present: bool = True) -> bytes | None:
    """Wait (with ``SCardGetStatusChange``, not a sleep) until a card is in ``reader``.

    Returns its ATR, or ``None`` when ``present=False`` and the reader became empty.
    Raises :class:`TransportTimeout` when it does not happen in time.
    """
    ctx, sock = establish_context(reader)
    if sock is not None:
        sock.close()
    try:
        state = S.SCARD_STATE_UNAWARE
        end = time.monotonic() + timeout
        while True:
            left_ms = int(max(0.0, end - time.monotonic()) * 1000)
            rv, states = S.SCardGetStatusChange(ctx, left_ms, [(reader, state)])
            if _u32(rv) == _u32(S.SCARD_E_TIMEOUT):
                want = "a card" if present else "the card to leave"
                raise TransportTimeout(f"{reader}: waited {timeout} s for {want}")
            check(rv, "wait for card", reader)
            _, event, atr = states[0]
            if event & S.SCARD_STATE_UNKNOWN:
                raise ReaderGone(f"{reader}: no such reader")
            if present and event & S.SCARD_STATE_PRESENT and not event & S.SCARD_STATE_MUTE:
                return bytes(atr)
            if not present and event & S.SCARD_STATE_EMPTY:
                return None
            state = event & ~S.SCARD_STATE_CHANGED
    finally:
        S.SCardReleaseContext(ctx)


class PcscTransport:
    """One connection to the card in ``reader``."""

    def __init__(
        self, reader: str, *, exclusive: bool = True, deadline: float = DEFAULT_DEADLINE
    ) -> None:
        self.name = reader
        self.deadline = deadline
        self._share = S.SCARD_SHARE_EXCLUSIVE if exclusive else S.SCARD_SHARE_SHARED
        self._ctx: int | None = None
        self._sock: socket.socket | None = None
        self._card: int | None = None
        self._protocol = 0
        self._atr = b""
        self._due: float | None = None  # deadline of the call in progress
        self.last_wire_ns = 0
        self._broken: str | None = None
        _WATCHDOG.watch(self)
        self._call(self._connect, "connect")

    # -- deadlines ------------------------------------------------------------------------
    def _call(self, job: Callable[[], T], what: str) -> T:
        if self._broken:
            raise TransportTimeout(f"{self.name}: {what}: transport broken ({self._broken})")
        self._due = time.monotonic() + self.deadline
        try:
            result = job()
        except TransportError:
            if self._broken:
                raise TransportTimeout(
                    f"{self.name}: {what}: no answer within {self.deadline:.3g} s"
                ) from None
            raise
        finally:
            self._due = None
        if self._broken:  # the watchdog fired as the call returned: trust neither
            raise TransportTimeout(f"{self.name}: {what}: no answer within {self.deadline:.3g} s")
        return result

    def _break(self) -> None:
        """Called by the watchdog: make the blocked call return by cutting its socket."""
        if self._broken:
            return
        self._broken = f"a call overran its {self.deadline:.3g} s deadline"
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    # -- PC/SC calls ------------------------------------------------------------------------
    def _connect(self) -> None:
        self._ctx, self._sock = establish_context(self.name)
        rv, card, protocol = S.SCardConnect(
            self._ctx, self.name, self._share, S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1
        )
        if rv != S.SCARD_S_SUCCESS:
            self._release()
        check(rv, "connect", self.name)
        self._card, self._protocol = card, protocol
        self._atr = self._status_atr()

    def _status_atr(self) -> bytes:
        rv, _reader, _state, _protocol, atr = S.SCardStatus(self._card)
        check(rv, "status", self.name)
        return bytes(atr)

    def _send(self, raw: bytes) -> bytes:
        if self._card is None:
            raise CardRemoved(f"{self.name}: not connected")
        t = time.perf_counter_ns()
        rv, resp = S.SCardTransmit(self._card, self._protocol, list(raw))
        self.last_wire_ns += time.perf_counter_ns() - t
        check(rv, "transmit", self.name)
        if len(resp) < 2:
            raise CardRemoved(f"{self.name}: card returned no valid response ({len(resp)} bytes)")
        return bytes(resp)

    def _reconnect(self, init: int) -> bytes:
        if self._card is None:
            raise CardRemoved(f"{self.name}: not connected")
        rv, self._protocol = S.SCardReconnect(
            self._card, self._share, S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1, init
        )
        check(rv, "reconnect", self.name)
        self._atr = self._status_atr()
        return self._atr

    def _release(self) -> None:
        if self._ctx is not None:
            S.SCardReleaseContext(self._ctx)
        if self._sock is not None:
            self._sock.close()
        self._ctx = self._sock = None

    # -- the Transport interface -------------------------------------------------------------
    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def protocol(self) -> str:
        return {S.SCARD_PROTOCOL_T0: "T=0", S.SCARD_PROTOCOL_T1: "T=1"}.get(self._protocol, "?")

    def transmit(self, cmd: CommandAPDU) -> ResponseAPDU:
        # The hot path of every run, inlined: one SCardTransmit under the deadline, and a
        # response that needs no T=0 procedure. Anything else takes the general path.
        card = self._card
        if card is not None and not self._broken:
            raw = list(cmd.to_bytes())
            self._due = time.monotonic() + self.deadline
            t = time.perf_counter_ns()
            try:
                rv, resp = S.SCardTransmit(card, self._protocol, raw)
            finally:
                self.last_wire_ns = time.perf_counter_ns() - t
                self._due = None
            if (
                rv == S.SCARD_S_SUCCESS
                and not self._broken
                and len(resp) >= 2
                and resp[-2] not in (0x61, 0x6C)
            ):
                return ResponseAPDU(bytes(resp[:-2]), (resp[-2] << 8) | resp[-1])
            if rv != S.SCARD_S_SUCCESS or self._broken or len(resp) < 2:
                return self._call(lambda: self._fail(rv, resp), "transmit")
            first = bytes(resp)
            return self._call(lambda: exchange(self._then(first), cmd), "transmit")
        self.last_wire_ns = 0
        return self._call(lambda: exchange(self._send, cmd), "transmit")

    def _fail(self, rv: int, resp: list[int]) -> ResponseAPDU:
        """Raise what a failed fast-path exchange means (in :meth:`_call`'s frame)."""
        if self._broken:
            raise TransportError("deadline")  # _call turns it into TransportTimeout
        check(rv, "transmit", self.name)
        raise CardRemoved(f"{self.name}: card returned no valid response ({len(resp)} bytes)")

    def _then(self, first: bytes) -> Callable[[bytes], bytes]:
        """A sender whose first answer is ``first`` (already received), then real sends."""
        answers = [first]

        def send(raw: bytes) -> bytes:
            return answers.pop() if answers else self._send(raw)

        return send

    def transmit_raw(self, raw: bytes) -> bytes:
        return self._call(lambda: self._send(raw), "transmit")

    def power_cycle(self) -> bytes:
        return self._call(lambda: self._reconnect(S.SCARD_UNPOWER_CARD), "power cycle")

    def reset(self) -> bytes:
        return self._call(lambda: self._reconnect(S.SCARD_RESET_CARD), "reset")

    def close(self, disposition: int = S.SCARD_UNPOWER_CARD) -> None:
        """Disconnect (unpowering the card by default) and release the context."""

        def release() -> None:
            if self._card is not None:
                S.SCardDisconnect(self._card, disposition)
            self._card = None
            self._release()

        if self._broken:
            with contextlib.suppress(Exception):
                self._release()
            return
        with contextlib.suppress(TransportError):
            self._call(release, "disconnect")

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reader_states(deadline: float = DEFAULT_DEADLINE) -> list[tuple[str, bool, bytes]]:
    """``(reader, card present, ATR)`` for every reader, without connecting to any card."""
    readers = list_readers(deadline)
    if not readers:
        return []
    ctx, sock = establish_context("pcscd")
    if sock is not None:
        sock.close()
    try:
        rv, states = S.SCardGetStatusChange(ctx, 0, [(r, S.SCARD_STATE_UNAWARE) for r in readers])
        check(rv, "reader states", "pcscd")
        return [
            (name, bool(event & S.SCARD_STATE_PRESENT), bytes(atr)) for name, event, atr in states
        ]
    finally:
        S.SCardReleaseContext(ctx)


def connect_when_ready(
    reader: str,
    timeout: float,
    *,
    check: Callable[[PcscTransport], object] | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> PcscTransport:
    """Connect to the card in ``reader`` once it answers (and passes ``check``).

    After a removal the reader may look occupied until its next presence poll (400 ms), and an
    emulator may take a moment to come back; so a failed attempt is closed and retried until
    ``timeout``, then its error is raised.
    """
    end = time.monotonic() + timeout
    while True:
        transport: PcscTransport | None = None
        try:
            wait_for_card(reader, max(0.1, end - time.monotonic()))
            transport = PcscTransport(reader, deadline=deadline)
            if check is not None:
                check(transport)
            return transport
        except TransportError:
            if transport is not None:
                transport.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.05)
