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
import logging
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


def daemon_threads() -> list[str]:
    """``schedstat`` files of the local pcscd's threads (found by its pid file), whose waits
    for a CPU latency figures leave out; none for a daemon reached elsewhere
    (``$PCSCLITE_CSOCK_NAME``) or off Linux."""
    if os.environ.get("PCSCLITE_CSOCK_NAME"):
        return []
    try:
        with open("/run/pcscd/pcscd.pid", "rb") as f:
            pid = int(f.read(32).strip(b"\0\n "))
        tasks = os.listdir(f"/proc/{pid}/task")
    except (OSError, ValueError):
        return []
    return [f"/proc/{pid}/task/{t}/schedstat" for t in sorted(tasks)]


# -- finding a context's socket ------------------------------------------------------------

#: pcsc-lite's default socket. ``$PCSCLITE_CSOCK_NAME`` overrides it for the client library
#: only (pcscd 1.9.9 has its path fixed at build time): e.g. a socket forwarded over ssh
PCSCD_SOCKET = "/run/pcscd/pcscd.comm"
#: where a process's open file descriptors are listed (Linux, then macOS and the BSDs)
FD_DIRS = ("/proc/self/fd", "/dev/fd")

log = logging.getLogger(__name__)


class DeadlineFallback(RuntimeWarning):
    """PC/SC calls are bounded by worker threads, not by the watchdog (said once)."""


_socket_path: list[str] = []


def pcscd_socket() -> str:
    """The path of the socket pcsc-lite's client connects to. pcsc-lite reads the variable
    once per process, at its first context; so does this."""
    if not _socket_path:
        _socket_path.append(os.environ.get("PCSCLITE_CSOCK_NAME") or PCSCD_SOCKET)
    return _socket_path[0]


def _same_path(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def _sockets() -> dict[tuple[int, int], int] | None:
    """This process's open sockets, ``(device, inode)`` to one descriptor of each; ``None``
    when they cannot be listed. By identity, not by number: a number closed and reused
    while a context is established is not a new socket, nor is a copy of an old one."""
    for where in FD_DIRS:
        try:
            names = os.listdir(where)
        except OSError:
            continue
        found: dict[tuple[int, int], int] = {}
        for name in names:
            try:
                st = os.fstat(int(name))
            except (OSError, ValueError):
                continue
            if stat.S_ISSOCK(st.st_mode):
                found.setdefault((st.st_dev, st.st_ino), int(name))
        return found
    return None


def _dup_socket(fd: int) -> socket.socket:
    copy = os.dup(fd)
    try:
        return socket.socket(fileno=copy)
    except OSError:
        os.close(copy)
        raise


def _peer(fd: int) -> str | None:
    try:
        probe = _dup_socket(fd)
    except OSError:
        return None
    with probe:
        try:
            peer = probe.getpeername() if probe.family == socket.AF_UNIX else None
        except OSError:
            return None
    return peer if isinstance(peer, str) else None


_said: list[str] = []


def _say_once(reason: str) -> None:
    """Warn, once per process, that calls are bounded by worker threads."""
    if _said:
        return
    _said.append(reason)
    message = (
        f"pinloop: {reason}; PC/SC calls run in worker threads of their own so that they "
        "still meet their deadlines"
    )
    log.warning(message)
    # with warnings turned into errors the call must still go on: the message is logged
    with contextlib.suppress(Warning):
        warnings.warn(message, DeadlineFallback, stacklevel=4)


def _background(job: Callable[[], object], name: str) -> None:
    """``job`` in a daemon thread of its own (not at all if no thread can be started)."""
    with contextlib.suppress(RuntimeError):
        threading.Thread(target=job, name=name, daemon=True).start()


_ESTABLISH_LOCK = threading.Lock()

Established = tuple[int, int, "socket.socket | None", "str | None"]


def _establish() -> Established:
    """``SCardEstablishContext`` and the context's own socket (``None`` and why not)."""
    with _ESTABLISH_LOCK:
        before = _sockets()
        rv, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
        if rv != S.SCARD_S_SUCCESS:
            return rv, ctx, None, None
        if before is None:
            return rv, ctx, None, "no list of open descriptors"
        want = pcscd_socket()
        try:
            new = [
                fd
                for key, fd in (_sockets() or {}).items()
                if key not in before and (p := _peer(fd)) is not None and _same_path(p, want)
            ]
            if len(new) != 1:
                why = f"{len(new)} new sockets to {want} after SCardEstablishContext"
                return rv, ctx, None, why
            return rv, ctx, _dup_socket(new[0]), None
        except OSError as exc:
            return rv, ctx, None, f"cannot inspect its descriptors ({exc})"


# -- worker threads ------------------------------------------------------------------------

#: calls abandoned in pcsc-lite that have not returned yet, and how many of them are
#: ``SCardEstablishContext``. pcsc-lite holds a process-wide lock through an establish:
#: while one is stuck, a call in any other context may wait for that lock, where no socket
#: shutdown reaches it; so while this is not 0 every call runs in a worker.
_stuck = [0]
_stuck_establish = [0]
#: establishes that returned after their caller gave up: how many, how many of them gave a
#: context, and how many of those contexts were released since
_late = {"returned": 0, "established": 0, "released": 0}
_STUCK_LOCK = threading.Lock()


class _Worker:
    """A thread that runs the PC/SC calls of one context, one after another, so that the
    caller can stop waiting. A call that overruns is abandoned: the worker takes no new
    call, but runs what is queued after it (the context's release) once it returns, so
    that nothing else touches the context meanwhile. It may never return (a daemon)."""

    def __init__(self, name: str, *, establish: bool = False) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._establish = establish
        self.abandoned = False
        try:
            threading.Thread(target=self._run, name=name, daemon=True).start()
        except RuntimeError as exc:
            raise TransportError(f"{name}: cannot start a worker thread ({exc})") from None

    def _count(self, step: int) -> None:
        with _STUCK_LOCK:
            _stuck[0] += step
            if self._establish:
                _stuck_establish[0] += step

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
            if box is None:  # queued by later(): nobody waits for it
                continue
            with self._lock:
                box.append(result)
                done.set()
                abandoned = self.abandoned
            if abandoned:  # the caller gave up on this call; once ``late`` has its result
                if late is not None and result[0]:  # the call is no longer stuck
                    with contextlib.suppress(Exception):
                        late(result[1])
                self._count(-1)

    def _abandon(self, box: list[Any]) -> bool:
        """Give up on the call whose result goes in ``box``, unless it has just come."""
        with self._lock:
            if box:
                return False
            self.abandoned = True
            self._count(+1)
            return True

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
        try:
            finished = done.wait(seconds)
        except BaseException:  # Ctrl-C while waiting: that call is abandoned too
            self._abandon(box)
            raise
        if not finished and self._abandon(box):
            raise TransportTimeout(f"{what}: no answer within {seconds:.3g} s")
        ok, value = box[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def later(self, job: Callable[[], object]) -> None:
        """``job`` after the call in progress (if any), in this worker; nobody waits."""
        self._jobs.put((job, None, None, None))

    def stop(self) -> None:
        self._jobs.put(None)


def _drop(established: Established) -> None:
    """An establish that returned after its caller gave up: give its context back."""
    rv, ctx, sock, _why = established
    with _STUCK_LOCK:
        _late["returned"] += 1
    if sock is not None:
        sock.close()
    if rv == S.SCARD_S_SUCCESS:
        with _STUCK_LOCK:
            _late["established"] += 1
        S.SCardReleaseContext(ctx)
        with _STUCK_LOCK:
            _late["released"] += 1


def establish_context(
    what: str, deadline: float = DEFAULT_DEADLINE
) -> tuple[int, socket.socket | None]:
    """A PC/SC context and a handle on its own socket to pcscd (``None`` if not found).

    pcsc-lite gives every context its own UNIX socket; shutting that socket down makes a
    call blocked on it return ``SCARD_F_COMM_ERROR``. That is how the watchdog enforces a
    deadline on calls that pcsc-lite itself never times out. The establishing itself runs
    in a worker under ``deadline``; while an earlier one is still stuck (pcscd frozen), a
    new one is refused at once instead of queueing one more thread behind it.
    """
    if _stuck_establish[0]:
        raise TransportTimeout(
            f"{what}: establish context: an earlier SCardEstablishContext of this process is "
            "still waiting for pcscd"
        )
    worker = _Worker("pcsc establish", establish=True)
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
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._run, name="pcsc watchdog", daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:
                    raise TransportError(f"cannot start the PC/SC watchdog ({exc})") from None
                self._thread = thread

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            try:
                now = time.monotonic()
                with self._lock:
                    watched = list(self._watched)
                for context in watched:
                    due = context._due
                    if due is not None and now > due:
                        context._break(due)
            except Exception:  # noqa: S112 - one odd context must not end every deadline
                continue


_WATCHDOG = _Watchdog()


class _Context:
    """One PC/SC context whose every call returns or raises within its deadline.

    Socket mode when the context's socket was found (the watchdog cuts it), worker mode
    when it was not, and for every call made while some call of this process is stuck in
    pcsc-lite (back to socket mode when none is).
    """

    def __init__(self, name: str, deadline: float) -> None:
        self.name = name
        self.deadline = deadline
        self._due: float | None = None  # when the call in progress overruns
        self._seconds = deadline  # the deadline of the call in progress
        self._broken: str | None = None
        self._worker: _Worker | None = None
        self._ctx: int | None = None
        self._sock: socket.socket | None = None
        self._ctx, self._sock = establish_context(name, deadline)
        if self._sock is not None:
            _WATCHDOG.watch(self)

    @property
    def worker_mode(self) -> bool:
        """Whether calls run in a worker thread now."""
        return self._sock is None or bool(_stuck[0])

    def _timeout(self, what: str) -> TransportTimeout:
        return TransportTimeout(f"{self.name}: {what}: no answer within {self._seconds:.3g} s")

    def _call(self, job: Callable[[], T], what: str, seconds: float | None = None) -> T:
        seconds = self.deadline if seconds is None else seconds
        if self._broken:
            raise TransportTimeout(f"{self.name}: {what}: transport broken ({self._broken})")
        self._seconds = seconds
        worker = None
        if self._sock is None or _stuck[0]:
            if self._worker is None:
                self._worker = _Worker(f"pcsc {self.name}")
            worker = self._worker
            if self._sock is not None:
                _say_once("a PC/SC call of this process is stuck in pcsc-lite")
        if self._sock is not None:  # in a worker too: a call blocked on it returns
            self._due = time.monotonic() + seconds
        try:
            result = job() if worker is None else worker.call(job, seconds, f"{self.name}: {what}")
        except TransportError as exc:
            if worker is not None and worker.abandoned and isinstance(exc, TransportTimeout):
                self._broken = f"a call overran its {seconds:.3g} s deadline"
                raise
            if self._broken:
                raise self._timeout(what) from None
            raise
        finally:
            self._due = None
        if self._broken:  # the watchdog fired as the call returned: trust neither
            raise self._timeout(what)
        return result

    def _break(self, due: float) -> None:
        """Called by the watchdog: make the call due at ``due`` return by cutting its
        socket (not a later call: the watchdog may have read ``due`` just before it ended)."""
        if self._broken or self._due != due:
            return
        self._broken = f"a call overran its {self._seconds:.3g} s deadline"
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR)

    def _release(self) -> None:
        ctx, self._ctx = self._ctx, None
        worker = self._worker
        if ctx is not None:
            release = partial(S.SCardReleaseContext, ctx)
            if worker is not None and worker.abandoned:
                # the abandoned call may still be inside pcsc-lite with this context: its
                # worker releases the context once that call has returned, not before
                worker.later(release)
            elif self._broken or _stuck[0]:
                # pcscd may never answer, or pcsc-lite wait for a lock a stuck call holds
                _background(release, "pcsc release")
            else:
                with contextlib.suppress(TransportError):
                    self._call(release, "release context")
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if worker is not None:
            worker.stop()

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
        if self._broken:  # abandoned between two PC/SC calls: no further call
            raise TransportError("deadline")
        rv, _reader, _state, _protocol, atr = S.SCardStatus(self._card)
        check(rv, "status", self.name)
        return bytes(atr)

    def _send(self, raw: bytes) -> bytes:
        if self._broken:  # abandoned between two PC/SC calls (GET RESPONSE): no further call
            raise TransportError("deadline")
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
        if card is not None and not self._broken and self._sock is not None and not _stuck[0]:
            raw = list(cmd.to_bytes())
            self._seconds = self.deadline
            due = self._due = time.monotonic() + self.deadline
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
            # the rest of the exchange (GET RESPONSE, 6C) within what is left of the deadline
            left = max(0.001, due - time.monotonic())
            return self._call(lambda: exchange(self._then(first), cmd), "transmit", left)
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
