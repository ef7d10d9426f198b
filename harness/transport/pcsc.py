"""A card in a PC/SC reader (real or virtual) through pyscard's ``smartcard.scard`` layer.

- Exclusive access by default: no other process can talk to the card during a test.
- Every PC/SC call has a deadline, whatever the host. pcsc-lite itself times out almost
  nothing (a frozen pcscd, a hung driver or emulator blocks ``SCardTransmit``,
  ``SCardListReaders`` and even ``SCardEstablishContext`` for ever), so pinloop bounds each
  call in one of two ways (see :class:`_Context`):

  * **socket mode** (the usual case): the call runs in the caller's thread; one watchdog
    thread per process breaks a call that overruns its deadline by shutting down the UNIX
    socket of that call's context, and the call returns. The hot path costs two attribute
    writes, not a thread hand-off. The socket is the one whose peer is pcscd's socket,
    ``$PCSCLITE_CSOCK_NAME`` when that is set (pcsc-lite's way to reach a daemon elsewhere,
    e.g. through an ssh-forwarded socket) or ``/run/pcscd/pcscd.comm``.
  * **worker mode**: when that socket cannot be found (no ``/proc/self/fd`` or ``/dev/fd``
    to look in, a peer of another name), or while an earlier call is still stuck in
    pcsc-lite, every call of the context runs in a worker thread of its own and the caller
    waits at most the deadline. An overrun call is abandoned with its thread. pinloop says
    so once per process (:class:`DeadlineFallback`).

  ``SCardEstablishContext`` always runs in a worker: its socket does not exist before it.
  Either way an overrun is :class:`~harness.errors.TransportTimeout` and the connection is
  broken (never used again).
- PC/SC error codes become typed errors: card removed, card reset, no card, reader gone,
  sharing violation, daemon gone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import stat
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

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


# -- finding a context's socket ------------------------------------------------------------

#: pcsc-lite's default socket; ``$PCSCLITE_CSOCK_NAME`` overrides it (client and daemon)
PCSCD_SOCKET = "/run/pcscd/pcscd.comm"
#: where a process's open file descriptors are listed (Linux, then macOS and the BSDs)
FD_DIRS = ("/proc/self/fd", "/dev/fd")


class DeadlineFallback(RuntimeWarning):
    """PC/SC calls are bounded by worker threads, not by the watchdog (said once)."""


def pcscd_socket() -> str:
    """The path of the socket pcsc-lite's client connects to."""
    return os.environ.get("PCSCLITE_CSOCK_NAME") or PCSCD_SOCKET


def _same_path(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def _socket_fds() -> set[int] | None:
    """This process's open socket descriptors (``None`` when they cannot be listed)."""
    for where in FD_DIRS:
        try:
            names = os.listdir(where)
        except OSError:
            continue
        found = set()
        for name in names:
            try:
                if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                    found.add(int(name))
            except (OSError, ValueError):
                continue
        return found
    return None


def _peer(fd: int) -> str | None:
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if probe.family != socket.AF_UNIX:
            return None
        peer = probe.getpeername()
        return peer if isinstance(peer, str) else None
    except OSError:
        return None
    finally:
        probe.close()


_said: set[str] = set()


def _say_once(reason: str) -> None:
    if "fallback" in _said:
        return
    _said.add("fallback")
    warnings.warn(
        f"pinloop: {reason}; every PC/SC call now runs in a worker thread of its own so that "
        "it still meets its deadline",
        DeadlineFallback,
        stacklevel=3,
    )


_ESTABLISH_LOCK = threading.Lock()


def _establish() -> tuple[int, int, socket.socket | None, str | None]:
    """``SCardEstablishContext`` and the context's own socket (``None`` and why not)."""
    with _ESTABLISH_LOCK:
        before = _socket_fds()
        rv, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
        if rv != S.SCARD_S_SUCCESS or before is None:
            why = None if rv != S.SCARD_S_SUCCESS else "no list of open descriptors"
            return rv, ctx, None, why
        after = _socket_fds() or set()
    want = pcscd_socket()
    new = [fd for fd in after - before if (p := _peer(fd)) is not None and _same_path(p, want)]
    if len(new) != 1:
        return rv, ctx, None, f"{len(new)} new sockets to {want} after SCardEstablishContext"
    return rv, ctx, socket.socket(fileno=os.dup(new[0])), None


# -- worker threads ------------------------------------------------------------------------

#: calls abandoned in pcsc-lite that have not returned yet. pcsc-lite holds a process-wide
#: lock through ``SCardEstablishContext``: while one is stuck, a call in any other context
#: may wait for that lock, where no socket shutdown can reach it; so every context then
#: runs its calls in workers.
_stuck = [0]
_STUCK_LOCK = threading.Lock()


class _Worker:
    """A thread that runs the PC/SC calls of one context, so that the caller can stop
    waiting. An overrun call is abandoned with its thread: it returns when pcscd wakes up,
    or never (the thread is a daemon)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.abandoned = False
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, box, done, late = item
            try:
                result: tuple[bool, Any] = (True, job())
            except BaseException as exc:  # handed to the caller
                result = (False, exc)
            with self._lock:
                box.append(result)
                done.set()
                abandoned = self.abandoned
            if abandoned:
                with _STUCK_LOCK:
                    _stuck[0] -= 1
                if late is not None and result[0]:
                    with contextlib.suppress(Exception):
                        late(result[1])
                return

    def call(
        self,
        job: Callable[[], T],
        seconds: float,
        what: str,
        late: Callable[[T], object] | None = None,
    ) -> T:
        """``job()`` within ``seconds``; if it returns after that, ``late`` gets its result."""
        if self.abandoned:
            raise TransportTimeout(f"{what}: an earlier call is still stuck in pcsc-lite")
        box: list[tuple[bool, Any]] = []
        done = threading.Event()
        self._jobs.put((job, box, done, late))
        if not done.wait(seconds):
            with self._lock:
                if not box:
                    self.abandoned = True
                    with _STUCK_LOCK:
                        _stuck[0] += 1
                    raise TransportTimeout(f"{what}: no answer within {seconds:.3g} s")
        ok, value = box[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def stop(self) -> None:
        if not self.abandoned:
            self._jobs.put(None)


def _drop(established: tuple[int, int, socket.socket | None, str | None]) -> None:
    """A context established after its caller gave up: give it back."""
    rv, ctx, sock, _why = established
    if sock is not None:
        sock.close()
    if rv == S.SCARD_S_SUCCESS:
        S.SCardReleaseContext(ctx)


def establish_context(
    what: str, deadline: float = DEFAULT_DEADLINE
) -> tuple[int, socket.socket | None]:
    """A PC/SC context and a handle on its own socket to pcscd (``None`` if not found).

    pcsc-lite gives every context its own UNIX socket; shutting that socket down makes a
    call blocked on it return ``SCARD_F_COMM_ERROR``. That is how the watchdog enforces a
    deadline on calls that pcsc-lite itself never times out. The establishing itself runs
    in a worker under ``deadline``.
    """
    worker = _Worker("pcsc establish")
    try:
        rv, ctx, sock, why = worker.call(
            _establish, deadline, f"{what}: establish context", late=_drop
        )
    finally:
        worker.stop()
    check(rv, "establish context", what)
    if sock is None and why is not None:
        _say_once(f"cannot find the socket of a PC/SC context ({why})")
    return ctx, sock


# -- contexts with deadlines ---------------------------------------------------------------


class _Watchdog:
    """One thread for the whole process: breaks calls that overrun their deadline."""

    TICK = 0.02

    def __init__(self) -> None:
        self._watched: weakref.WeakSet[_Context] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, context: _Context) -> None:
        with self._lock:
            self._watched.add(context)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pcsc watchdog", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                watched = list(self._watched)
            for context in watched:
                due = context._due
                if due is not None and now > due:
                    context._break()


_WATCHDOG = _Watchdog()


class _Context:
    """One PC/SC context whose every call returns or raises within its deadline.

    Socket mode when the context's socket was found (the watchdog cuts it), worker mode
    otherwise or while some call of this process is stuck in pcsc-lite.
    """

    def __init__(self, name: str, deadline: float) -> None:
        self.name = name
        self.deadline = deadline
        self._due: float | None = None  # deadline of the call in progress (socket mode)
        self._broken: str | None = None
        self._worker: _Worker | None = None
        self._ctx: int | None = None
        self._sock: socket.socket | None = None
        self._ctx, self._sock = establish_context(name, deadline)
        if self._sock is None:
            self._worker = _Worker(f"pcsc {name}")
        else:
            _WATCHDOG.watch(self)

    @property
    def worker_mode(self) -> bool:
        return self._worker is not None

    def _call(self, job: Callable[[], T], what: str, seconds: float | None = None) -> T:
        seconds = self.deadline if seconds is None else seconds
        if self._broken:
            raise TransportTimeout(f"{self.name}: {what}: transport broken ({self._broken})")
        if self._worker is None and _stuck[0]:
            self._worker = _Worker(f"pcsc {self.name}")
        if self._worker is not None:
            try:
                return self._worker.call(job, seconds, f"{self.name}: {what}")
            except TransportTimeout:
                if self._worker.abandoned:
                    self._broken = f"a call overran its {seconds:.3g} s deadline"
                raise
        self._due = time.monotonic() + seconds
        try:
            result = job()
        except TransportError:
            if self._broken:
                raise TransportTimeout(
                    f"{self.name}: {what}: no answer within {seconds:.3g} s"
                ) from None
            raise
        finally:
            self._due = None
        if self._broken:  # the watchdog fired as the call returned: trust neither
            raise TransportTimeout(f"{self.name}: {what}: no answer within {seconds:.3g} s")
        return result

    def _break(self) -> None:
        """Called by the watchdog: make the blocked call return by cutting its socket."""
        if self._broken:
            return
        self._broken = f"a call overran its {self.deadline:.3g} s deadline"
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _release(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            if self._broken:
                # pcscd may never answer, and an abandoned call may hold the context's
                # lock: let a thread of its own wait for that
                threading.Thread(
                    target=S.SCardReleaseContext, args=(ctx,), name="pcsc release", daemon=True
                ).start()
            else:
                with contextlib.suppress(TransportError):
                    self._call(lambda: S.SCardReleaseContext(ctx), "release context")
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._worker is not None:
            self._worker.stop()

    def __enter__(self) -> _Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()


def context_accepted(deadline: float = DEFAULT_DEADLINE) -> bool:
    """Whether the PC/SC daemon gives a context (and takes it back) within ``deadline``."""
    try:
        with _Context("pcscd", deadline):
            return True
    except TransportError:
        return False


def list_readers(deadline: float = DEFAULT_DEADLINE) -> list[str]:
    """Reader names known to the PC/SC daemon (``[]`` when none)."""
    with _Context("pcscd", deadline) as c:
        rv, readers = c._call(lambda: S.SCardListReaders(c._ctx, []), "list readers")
        if _u32(rv) == _u32(S.SCARD_E_NO_READERS_AVAILABLE):
            return []
        check(rv, "list readers", "pcscd")
        return list(readers)


def wait_for_card(
    reader: str, timeout: float, *, present: bool = True, deadline: float = DEFAULT_DEADLINE
) -> bytes | None:
    """Wait (with ``SCardGetStatusChange``, not a sleep) until a card is in ``reader``.

    Returns its ATR, or ``None`` when ``present=False`` and the reader became empty.
    Raises :class:`TransportTimeout` when it does not happen in time; each call may take
    ``deadline`` longer than the time left before pinloop gives up on the daemon.
    """
    with _Context(reader, deadline) as c:
        state = S.SCARD_STATE_UNAWARE
        end = time.monotonic() + timeout
        while True:
            left = max(0.0, end - time.monotonic())
            rv, states = c._call(
                partial(S.SCardGetStatusChange, c._ctx, int(left * 1000), [(reader, state)]),
                "wait for card",
                left + deadline,
            )
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


class PcscTransport(_Context):
    """One connection to the card in ``reader``."""

    def __init__(
        self, reader: str, *, exclusive: bool = True, deadline: float = DEFAULT_DEADLINE
    ) -> None:
        self._share = S.SCARD_SHARE_EXCLUSIVE if exclusive else S.SCARD_SHARE_SHARED
        self._card: int | None = None
        self._protocol = 0
        self._atr = b""
        self.last_wire_ns = 0
        super().__init__(reader, deadline)
        try:
            self._call(self._connect, "connect")
        except BaseException:
            self._release()
            raise

    # -- PC/SC calls ------------------------------------------------------------------------
    def _connect(self) -> None:
        rv, card, protocol = S.SCardConnect(
            self._ctx, self.name, self._share, S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1
        )
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
        if card is not None and not self._broken and self._worker is None and not _stuck[0]:
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
        if not self._broken and self._card is not None:
            card = self._card
            with contextlib.suppress(TransportError):
                self._call(lambda: S.SCardDisconnect(card, disposition), "disconnect")
        self._card = None
        self._release()

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reader_states(deadline: float = DEFAULT_DEADLINE) -> list[tuple[str, bool, bytes]]:
    """``(reader, card present, ATR)`` for every reader, without connecting to any card."""
    readers = list_readers(deadline)
    if not readers:
        return []
    with _Context("pcscd", deadline) as c:
        rv, states = c._call(
            lambda: S.SCardGetStatusChange(
                c._ctx, 0, [(r, S.SCARD_STATE_UNAWARE) for r in readers]
            ),
            "reader states",
        )
        check(rv, "reader states", "pcscd")
        return [
            (name, bool(event & S.SCARD_STATE_PRESENT), bytes(atr)) for name, event, atr in states
        ]


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
