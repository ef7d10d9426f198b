"""Start and stop Debian's ``pcscd`` with vsmartcard's vpcd readers, without systemd.

- pcscd runs in the foreground as our child (``--foreground --debug``, never ``--auto-exit``:
  that would exit 60 s after the last client, and an emulator is no client). Not ``--apdu``:
  pcscd would log every APDU in clear, PINs included, and its log is shown on lab faults.
- It needs root. Not root: a :class:`LabError` names the exact command to run.
- A pcscd we did not start is never stopped; by default we refuse to run beside one.
- Readiness is the daemon answering ``SCardEstablishContext``, not a sleep.
- More than vpcd's two built-in slots: each further pair of slots gets its own copy of the
  driver (``dlopen`` of the same path would share one global state) and its own reader name.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.links.vpcd import first_port

PCSCD = "/usr/sbin/pcscd"
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
PID_FILE = Path("/run/pcscd/pcscd.pid")
SOCKET = Path("/run/pcscd/pcscd.comm")
_PAIR_NAMES = "ABCDEFG"
#: vpcd's two slots, and two more for each further driver instance (A to G)
MAX_SLOTS = 2 * (len(_PAIR_NAMES) + 1)


class LabError(HarnessError):
    """The lab cannot be set up (missing package, not root, a foreign daemon running)."""


@dataclass(frozen=True)
class VirtualSlot:
    """One vpcd slot: the TCP port an emulator connects to and the PC/SC reader name."""

    index: int
    port: int
    reader: str

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"


def virtual_slots(count: int) -> list[VirtualSlot]:
    """The readers a config made by :func:`write_reader_config` for ``count`` slots has."""
    slots = []
    base = first_port()
    for i in range(count):
        pair, slot = divmod(i, 2)
        friendly = "Virtual PCD" if pair == 0 else f"Virtual PCD {_PAIR_NAMES[pair - 1]}"
        slots.append(VirtualSlot(i, base + i, f"{friendly} 00 {slot:02X}"))
    return slots


def write_reader_config(directory: Path, count: int) -> list[VirtualSlot]:
    """A reader.conf directory with ``count`` vpcd slots (2 per driver instance)."""
    if not 1 <= count <= MAX_SLOTS:
        raise LabError(f"between 1 and {MAX_SLOTS} virtual slots, not {count}")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    # pcscd parses every regular file in the config directory: drivers live beside it
    drivers = directory.with_name(directory.name + ".drivers")
    drivers.mkdir(exist_ok=True)
    slots = virtual_slots(count)
    for pair in range((count + 1) // 2):
        driver = VPCD_DRIVER
        if pair:
            driver = drivers / f"libifdvpcd-{pair}.so"
            shutil.copy2(VPCD_DRIVER.resolve(), driver)
        port = slots[2 * pair].port
        friendly = slots[2 * pair].reader[: -len(" 00 00")]
        (directory / f"vpcd-{pair}").write_text(
            f'FRIENDLYNAME "{friendly}"\nDEVICENAME /dev/null:{port}\n'
            f"LIBPATH {driver}\nCHANNELID {port}\n"
        )
    return slots


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the harness process dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def missing_packages() -> list[str]:
    missing = []
    if not Path(PCSCD).exists():
        missing.append("pcscd")
    if not VPCD_DRIVER.exists():
        missing.append("vsmartcard-vpcd")
    return missing


def _running_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_bytes().strip(b"\0\n "))
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def daemon_answers(deadline: float = 2.0) -> bool:
    """Whether a PC/SC daemon accepts a context right now (within ``deadline``)."""
    from harness.transport.pcsc import context_accepted

    return context_accepted(deadline)


class Pcscd:
    """A pcscd this process started; use as a context manager."""

    def __init__(self, log_path: Path, *, slots: int = 2, config_dir: Path | None = None) -> None:
        self.log_path = log_path
        self.slot_count = slots
        self.config_dir = config_dir or log_path.parent / "reader.conf.d"
        self.slots: list[VirtualSlot] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._unplugged: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        missing = missing_packages()
        if missing:
            raise LabError(
                "missing Debian packages; run as root: apt-get install -y " + " ".join(missing)
            )
        if os.geteuid() != 0:
            raise LabError(
                "pinloop starts its own pcscd, which must run as root: run this as root (sudo)"
            )
        other = _running_pid()
        grace = time.monotonic() + 2.0  # one that another harness process is stopping
        while other is not None and time.monotonic() < grace:
            time.sleep(0.05)
            other = _running_pid()
        if other is not None:
            raise LabError(
                f"another pcscd (pid {other}) is running; pinloop starts its own "
                f"and never stops a daemon it did not start: stop it with "
                f"kill -TERM {other}"
            )
        self.slots = write_reader_config(self.config_dir, self.slot_count)
        if self._unplugged is not None:
            (self.config_dir / f"vpcd-{self._unplugged}").unlink()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
                [PCSCD, "--foreground", "--debug", "--config", str(self.config_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LabError(
                    f"pcscd exited with status {self._proc.returncode}; "
                    f"log: {self.log_path}\n{self.log_tail()}"
                )
            if SOCKET.exists() and daemon_answers():
                return
            time.sleep(0.01)
        self.stop()
        raise LabError(f"pcscd did not answer within {timeout} s; log: {self.log_path}")

    def stop(self) -> None:
        """SIGTERM our pcscd (it exits in ~1 ms and cleans /run/pcscd) and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def restart(self, *, unplug_pair: int | None = None) -> None:
        """Stop and start again. With ``unplug_pair``, that driver instance's two readers are
        left out of the new daemon, as if a USB reader had been pulled out (fault injection);
        the next plain restart puts them back."""
        self.stop()
        self._unplugged = unplug_pair
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def __enter__(self) -> Pcscd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def port_sockets(port: int, count: int = 1) -> str:
    """The TCP sockets on ``count`` ports from ``port`` (``ss -tanpi``: who listens, who is
    connected; on a listening socket Recv-Q counts the connections waiting in its backlog),
    for a lab fault's message."""
    ports = f"port {port}" if count == 1 else f"ports {port}-{port + count - 1}"
    ss = shutil.which("ss")
    if ss is None:
        return f"sockets of {ports}: ss (iproute2) is not installed"
    last = port + count - 1
    try:
        out = subprocess.run(  # noqa: S603 - ss with fixed arguments
            [
                ss,
                "-tanpi",
                f"( sport >= :{port} and sport <= :{last} ) or "
                f"( dport >= :{port} and dport <= :{last} )",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sockets of {ports}: ss failed ({exc})"
    return f"sockets of {ports} (ss -tanpi):\n{out.rstrip()}"


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class SharedPcscd:
    """A pcscd that another process started and stops (the xdist controller): this process
    serves a card in one of its slots and can show its log."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def stop(self) -> None:
        pass  # not ours to stop
