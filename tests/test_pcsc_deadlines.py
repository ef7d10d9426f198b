"""Every PC/SC call meets its deadline, whatever socket pcscd is reached through and whether
or not the host lists open file descriptors: a frozen pcscd (SIGSTOP) is a
``TransportTimeout`` within the deadline + 0.25 s, never a hang.

pcscd is reached through a relay of this test (a UNIX socket forwarded byte for byte, as an
ssh-forwarded socket would be) named by ``PCSCLITE_CSOCK_NAME``; pcsc-lite reads that once
per process, so the client runs in a subprocess (:data:`CLIENT`).
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
from harness.lab.emulator import EmulatorProcess
from harness.lab.pcscd import Pcscd
from harness.transport.pcsc import wait_for_card
from tests.pcsc_lab import require_pcsc

DEADLINE = 1.0
SLACK = 0.25
ROOT = Path(__file__).resolve().parents[1]

#: the client: connects, says "ready", waits for "frozen", times each call against the
#: frozen daemon, then waits for "thawed" and shows that a new connection works again
CLIENT = r"""
import json, sys, time, warnings
from harness.errors import TransportError
from harness.transport import pcsc

warnings.simplefilter("always")
caught = []
def show(message, category, *a, **k):
    caught.append(f"{category.__name__}: {message}")
warnings.showwarning = show
JPKI = bytes.fromhex("00A4040C0AD392F000260100000001")
from harness.apdu.model import CommandAPDU
cmd = CommandAPDU.parse(JPKI)
reader = sys.argv[1]
deadline = float(sys.argv[2])
transport = pcsc.PcscTransport(reader, deadline=deadline)
out = {"worker_mode": transport.worker_mode, "ok_before": transport.transmit(cmd).ok}
print("ready", flush=True)
assert sys.stdin.readline().strip() == "frozen"

def timed(name, call):
    t = time.monotonic()
    try:
        call()
        out[name] = ["returned", time.monotonic() - t]
    except TransportError as exc:
        out[name] = [type(exc).__name__, time.monotonic() - t]

timed("transmit", lambda: transport.transmit(cmd))
timed("transmit_again", lambda: transport.transmit(cmd))
timed("list_readers", lambda: pcsc.list_readers(deadline))
timed("wait_for_card", lambda: pcsc.wait_for_card(reader, 0.2, deadline=deadline))
timed("connect", lambda: pcsc.PcscTransport(reader, deadline=deadline))
t = time.monotonic()
transport.close()
out["close_s"] = time.monotonic() - t
print("timed", flush=True)
assert sys.stdin.readline().strip() == "thawed"
end = time.monotonic() + 10
while pcsc._stuck[0] and time.monotonic() < end:
    time.sleep(0.02)
out["stuck_after_thaw"] = pcsc._stuck[0]
again = pcsc.connect_when_ready(reader, 5, deadline=deadline)
out["ok_after"] = again.transmit(cmd).ok
again.close()
out["warnings"] = caught
print(json.dumps(out), flush=True)
"""


class Relay:
    """A UNIX socket that forwards every connection to pcscd's socket, byte for byte."""

    def __init__(self, path: Path, target: str = "/run/pcscd/pcscd.comm") -> None:
        self.path, self.target = path, target
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

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
        for s in self._open:
            s.close()


@pytest.fixture
def frozen_lab(tmp_path: Path, template_state: CardState) -> Iterator[tuple[Pcscd, Relay, str]]:
    """Our own pcscd with an emulated card in slot 0, and a relay to its socket."""
    require_pcsc()
    daemon = Pcscd(tmp_path / "pcscd.log", slots=2)
    daemon.start()
    emu = EmulatorProcess(template_state, tmp_path, daemon.slots[0].url)
    relay = Relay(tmp_path / "relay.sock")
    try:
        wait_for_card(daemon.slots[0].reader, 5)
        yield daemon, relay, daemon.slots[0].reader
    finally:
        if daemon.pid:
            os.kill(daemon.pid, signal.SIGCONT)
        relay.close()
        emu.kill()
        daemon.stop()


def _line(proc: subprocess.Popen[str], within: float) -> str:
    """The client's next line; a client that hangs fails the test instead of hanging it."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], within)
    assert ready, f"the client said nothing for {within} s: a PC/SC call hung"
    return proc.stdout.readline()


def _run_client(
    lab: Pcscd, relay: Relay, reader: str, *, hide_proc: bool
) -> tuple[dict[str, object], str]:
    env = dict(os.environ, PCSCLITE_CSOCK_NAME=str(relay.path), PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-c", CLIENT, reader, str(DEADLINE)]
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
    assert proc.stdin is not None and proc.stdout is not None
    try:
        first = _line(proc, 20)
        assert first.strip() == "ready", first + proc.stderr.read() if proc.stderr else first
        assert lab.pid is not None
        os.kill(lab.pid, signal.SIGSTOP)
        proc.stdin.write("frozen\n")
        proc.stdin.flush()
        # every call is bounded: the whole frozen phase ends in seconds, not never
        timed = _line(proc, 20)
        assert timed.strip() == "timed", timed
        os.kill(lab.pid, signal.SIGCONT)
        proc.stdin.write("thawed\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=30)
    finally:
        if lab.pid is not None:
            os.kill(lab.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))  # the figures, shown with -s
    return result, err


def _assert_bounded(result: dict[str, object]) -> None:
    for call in ("transmit", "list_readers", "connect"):
        kind, elapsed = result[call]  # type: ignore[misc]
        assert kind == "TransportTimeout", (call, result)
        assert elapsed < DEADLINE + SLACK, (call, result)
    kind, elapsed = result["wait_for_card"]  # type: ignore[misc]
    assert kind == "TransportTimeout" and elapsed < 0.2 + DEADLINE + SLACK, result
    kind, elapsed = result["transmit_again"]  # type: ignore[misc]
    assert kind == "TransportTimeout" and elapsed < 0.05, result  # broken: never reused
    assert result["close_s"] < 0.05, result  # releasing a frozen context does not wait
    assert result["ok_before"] and result["ok_after"], result
    assert result["stuck_after_thaw"] == 0, result


def test_a_frozen_pcscd_through_a_relayed_socket_is_a_timeout(
    frozen_lab: tuple[Pcscd, Relay, str],
) -> None:
    result, _err = _run_client(*frozen_lab, hide_proc=False)
    # the context's socket was found by its peer, $PCSCLITE_CSOCK_NAME: the watchdog cuts it
    assert result["worker_mode"] is False and result["warnings"] == [], result
    _assert_bounded(result)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare(1) to hide /proc")
def test_a_frozen_pcscd_with_proc_hidden_is_a_timeout(
    frozen_lab: tuple[Pcscd, Relay, str],
) -> None:
    result, _err = _run_client(*frozen_lab, hide_proc=True)
    # no descriptor list to find the socket in: worker threads bound the calls, said once
    assert result["worker_mode"] is True, result
    [said] = result["warnings"]  # type: ignore[misc]
    assert said.startswith("DeadlineFallback: ") and "no list of open descriptors" in said
    _assert_bounded(result)
