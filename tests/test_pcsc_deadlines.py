"""Every PC/SC call meets its deadline, whatever socket pcscd is reached through and whether
or not the host lists open file descriptors: a frozen pcscd is a ``TransportTimeout`` within
the deadline + 0.25 s, never a hang, and everything works again once it wakes up.

pcscd is reached through a relay of this test (a UNIX socket forwarded byte for byte, as an
ssh-forwarded socket would be) named by ``PCSCLITE_CSOCK_NAME``; pcsc-lite reads that once
per process, so the client runs in a subprocess (:data:`CLIENT`). Two ways to stop pcscd:

- ``frozen``: SIGSTOP. Every call waits, on an established context or establishing one.
- ``held``: the relay parks every *new* connection while the established ones still flow.
  An ``SCardEstablishContext`` then waits for ever holding pcsc-lite's process-wide lock,
  which blocks calls on healthy contexts too, where cutting their socket does not reach.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.emulator import CardState
from harness.lab.pcscd import Pcscd
from harness.transport.pcsc import wait_for_card
from tests.emulator_process import EmulatorProcess
from tests.pcsc_lab import require_pcsc
from tests.support import freeze

DEADLINE = 1.0
SLACK = 0.25
ROOT = Path(__file__).resolve().parents[1]

#: the client: connects, says "ready", waits for "stopped", times each call, says "timed",
#: waits for "woken", then shows that new connections work again (and prints its figures)
CLIENT = r"""
import json, sys, time, warnings
from functools import partial
from smartcard import scard as S
from harness.apdu.model import CommandAPDU
from harness.errors import TransportError
from harness.transport import pcsc

warnings.simplefilter("always")
caught = []
def show(message, category, *a, **k):
    caught.append(f"{category.__name__}: {message}")
warnings.showwarning = show
cmd = CommandAPDU.parse(bytes.fromhex("00A4040C0AD392F000260100000001"))
reader, deadline, how = sys.argv[1], float(sys.argv[2]), sys.argv[3]
transport = pcsc.PcscTransport(reader, deadline=deadline)
# two more contexts, established before pcscd stops, for calls other than transmit
listing = pcsc._Context("listing", deadline)
waiting = pcsc._Context("waiting", deadline)
out = {"worker_mode": transport.worker_mode, "ok_before": transport.transmit(cmd).ok}
print("ready", flush=True)
assert sys.stdin.readline().strip() == "stopped"

def timed(name, call):
    t = time.monotonic()
    try:
        call()
        out[name] = ["returned", time.monotonic() - t]
    except TransportError as exc:
        out[name] = [type(exc).__name__, time.monotonic() - t]

if how == "frozen":  # calls on established contexts first, while nothing is stuck yet
    timed("transmit", lambda: transport.transmit(cmd))
    timed("transmit_again", lambda: transport.transmit(cmd))
    timed("SCardListReaders", lambda: listing._call(
        partial(S.SCardListReaders, listing._ctx, []), "list readers"))
    timed("SCardGetStatusChange", lambda: waiting._call(
        partial(S.SCardGetStatusChange, waiting._ctx, 60000,
                [(reader, S.SCARD_STATE_UNAWARE)]), "wait"))
timed("list_readers", lambda: pcsc.list_readers(deadline))  # an establish that gets stuck
out["stuck_while_stopped"] = pcsc._stuck[0]
timed("wait_for_card", lambda: pcsc.wait_for_card(reader, 0.2, deadline=deadline))
timed("connect", lambda: pcsc.PcscTransport(reader, deadline=deadline))
if how == "held":  # a healthy context, blocked by the stuck establish's lock
    timed("transmit", lambda: transport.transmit(cmd))
    timed("transmit_again", lambda: transport.transmit(cmd))
t = time.monotonic()
for context in (transport, listing, waiting):
    context.close() if context is transport else context._release()
out["close_s"] = time.monotonic() - t
print("timed", flush=True)
assert sys.stdin.readline().strip() == "woken"
end = time.monotonic() + 10
while pcsc._stuck[0] and time.monotonic() < end:
    time.sleep(0.02)
out["stuck_after_waking"] = pcsc._stuck[0]
out["late"] = dict(pcsc._late)
again = pcsc.connect_when_ready(reader, 5, deadline=deadline)
out["worker_mode_after"] = again.worker_mode
out["ok_after"] = again.transmit(cmd).ok
again.close()
out["warnings"] = caught
print(json.dumps(out), flush=True)
"""


class Relay:
    """A UNIX socket that forwards every connection to pcscd's socket, byte for byte; while
    ``hold`` is set, new connections are accepted but parked until :meth:`release`."""

    def __init__(self, path: Path, target: str = "/run/pcscd/pcscd.comm") -> None:
        self.path, self.target = path, target
        self.hold = False
        self.parked: list[socket.socket] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                if self.hold:
                    self.parked.append(client)
                    continue
            self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.target)
        self._open += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def release(self) -> None:
        with self._lock:
            self.hold = False
            parked, self.parked = self.parked, []
        for client in parked:
            self._forward(client)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()
        for s in self._open + self.parked:
            s.close()


@pytest.fixture
def lab(tmp_path: Path, template_state: CardState) -> Iterator[tuple[Pcscd, Relay, str]]:
    """Our own pcscd with an emulated card in slot 0, and a relay to its socket."""
    require_pcsc()
    daemon = Pcscd(tmp_path / "pcscd.log", slots=2)
    daemon.start()
    relay: Relay | None = None
    emu: EmulatorProcess | None = None
    try:
        emu = EmulatorProcess(template_state, tmp_path, daemon.slots[0].url)
        relay = Relay(tmp_path / "relay.sock")
        wait_for_card(daemon.slots[0].reader, 15)
        yield daemon, relay, daemon.slots[0].reader
    finally:
        if daemon.pid:
            os.kill(daemon.pid, signal.SIGCONT)
        if relay is not None:
            relay.close()
        if emu is not None:
            emu.kill()
        daemon.stop()


def _line(proc: subprocess.Popen[str], within: float) -> str:
    """The client's next line; a client that hangs fails the test instead of hanging it."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], within)
    assert ready, f"the client said nothing for {within} s: a PC/SC call hung"
    return proc.stdout.readline()


_freeze = freeze


def _hidden_proc_works() -> bool:
    """Whether this host lets us hide /proc in a mount namespace (root with CAP_SYS_ADMIN)."""
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-m", "sh", "-c", "mount -t tmpfs none /proc && test ! -e /proc/self"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def _run_client(
    lab: tuple[Pcscd, Relay, str], how: str, *, hide_proc: bool = False
) -> dict[str, object]:
    daemon, relay, reader = lab
    env = dict(os.environ, PCSCLITE_CSOCK_NAME=str(relay.path), PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-c", CLIENT, reader, str(DEADLINE), how]
    if hide_proc:  # a mount namespace of its own, with an empty /proc (so no /dev/fd)
        argv = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none /proc && exec "$@"', "-", *argv]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdin is not None and daemon.pid is not None
    try:
        first = _line(proc, 20)
        assert first.strip() == "ready", first
        if how == "frozen":
            _freeze(daemon.pid)
        else:
            relay.hold = True
        proc.stdin.write("stopped\n")
        proc.stdin.flush()
        timed = _line(proc, 20)  # every call is bounded: the stopped phase ends in seconds
        assert timed.strip() == "timed", timed
        if how == "frozen":
            os.kill(daemon.pid, signal.SIGCONT)
        else:
            relay.release()
        proc.stdin.write("woken\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=30)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
        relay.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))  # the figures, shown with -s
    return result


def _timeout(result: dict[str, object], call: str, within: float = DEADLINE + SLACK) -> float:
    kind, elapsed = result[call]  # type: ignore[misc]
    assert kind == "TransportTimeout" and elapsed < within, (call, result)
    return float(elapsed)


def _assert_recovered(result: dict[str, object], *, late: int) -> None:
    """pcscd woke up: nothing left stuck, every establish given up on came back (with a
    context or, once pcscd had dropped it, an error), every such context given back, and a
    new connection works, with its socket found again."""
    assert result["ok_before"] and result["ok_after"], result
    assert result["stuck_after_waking"] == 0, result
    counts = result["late"]
    assert isinstance(counts, dict), result
    assert counts["returned"] == late and counts["released"] == counts["established"], result
    assert result["close_s"] < 0.05, result  # releasing a stopped context does not wait


def test_a_frozen_pcscd_through_a_relayed_socket_is_a_timeout(
    lab: tuple[Pcscd, Relay, str],
) -> None:
    result = _run_client(lab, "frozen")
    # the context's socket was found by its peer, $PCSCLITE_CSOCK_NAME: the watchdog cuts it
    assert result["worker_mode"] is False and result["warnings"] == [], result
    for call in ("transmit", "SCardListReaders", "SCardGetStatusChange", "list_readers"):
        assert _timeout(result, call) > DEADLINE - 0.05, call  # not early either
    _timeout(result, "transmit_again", 0.05)  # broken: never used again
    assert result["stuck_while_stopped"] == 1, result  # the establish in list_readers
    _timeout(result, "wait_for_card", 0.05)  # refused at once behind that stuck establish
    _timeout(result, "connect", 0.05)
    _assert_recovered(result, late=1)
    assert result["worker_mode_after"] is False, result


def test_a_frozen_pcscd_with_proc_hidden_is_a_timeout(lab: tuple[Pcscd, Relay, str]) -> None:
    if not _hidden_proc_works():
        pytest.skip("cannot hide /proc here (unshare -m needs root with CAP_SYS_ADMIN)")
    result = _run_client(lab, "frozen", hide_proc=True)
    # no descriptor list to find the socket in: worker threads bound the calls, said once
    assert result["worker_mode"] is True, result
    [said] = result["warnings"]  # type: ignore[misc]
    assert said.startswith("DeadlineFallback: ") and "no list of open descriptors" in said
    for call in ("transmit", "SCardListReaders", "SCardGetStatusChange", "list_readers"):
        assert _timeout(result, call) > DEADLINE - 0.05, call
    _timeout(result, "transmit_again", 0.05)
    _timeout(result, "wait_for_card", 0.05)
    _timeout(result, "connect", 0.05)
    _assert_recovered(result, late=1)
    assert result["worker_mode_after"] is True, result


def test_a_stuck_establish_does_not_hang_a_healthy_connection(
    lab: tuple[Pcscd, Relay, str],
) -> None:
    result = _run_client(lab, "held")
    assert result["worker_mode"] is False, result
    _timeout(result, "list_readers")
    assert result["stuck_while_stopped"] == 1, result
    _timeout(result, "wait_for_card", 0.05)
    _timeout(result, "connect", 0.05)
    # pcscd answers this connection, but pcsc-lite makes its transmit wait for the lock the
    # stuck establish holds: it runs in a worker and is given up at its deadline
    assert _timeout(result, "transmit") > DEADLINE - 0.05, result
    _timeout(result, "transmit_again", 0.05)
    [said] = result["warnings"]  # type: ignore[misc]
    assert "stuck in pcsc-lite" in said, said
    _assert_recovered(result, late=1)
    assert result["worker_mode_after"] is False, result  # socket mode again, nothing stuck
