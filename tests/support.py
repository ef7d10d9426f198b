"""Helpers for the harness's tests: a tiny host that sends APDUs to an emulated card by PIN id
and application id, a pty port, and a pytest run in a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.cards.jpki.layout import APPS_BY_ID, LAYOUT, PINS_BY_ID
from harness.emulator import CardConfig, EmulatedCard
from harness.secret import Secret
from harness.targets import GuardedCard, InProcessTarget


class Host:
    def __init__(self, card: EmulatedCard, config: CardConfig) -> None:
        self.card = card
        self.config = config
        self.secrets = {k: v.encode() for k, v in config.secrets().items()}

    def send(self, cmd: CommandAPDU | str) -> ResponseAPDU:
        if isinstance(cmd, str):
            cmd = CommandAPDU.from_hex(cmd)
        raw = self.card.transmit(cmd.to_bytes())
        return ResponseAPDU.parse(raw)

    def sw(self, cmd: CommandAPDU | str) -> int:
        return self.send(cmd).sw

    def select_app(self, app_id: str) -> None:
        assert self.sw(C.select_df(APPS_BY_ID[app_id].aid)) == SW.OK

    def select_pin(self, pin_id: str) -> None:
        spec = PINS_BY_ID[pin_id]
        self.select_app(spec.app)
        assert self.sw(C.select_ef(spec.fid)) == SW.OK

    def select_file(self, app_id: str, fid: int) -> None:
        self.select_app(app_id)
        assert LAYOUT[app_id].files.get(fid) or LAYOUT[app_id].pins.get(fid)
        assert self.sw(C.select_ef(fid)) == SW.OK

    def verify(self, pin_id: str, value: bytes | None = None) -> int:
        """VERIFY on the currently selected EF (select first); ``None`` = the right PIN."""
        return self.sw(C.verify(self.secrets[pin_id] if value is None else value))

    def tries(self) -> int:
        """Remaining tries of the selected PIN, by the free status query."""
        sw = self.sw(C.pin_status())
        left = SW.retries_left(sw)
        assert left is not None, f"status query answered {sw:04X}"
        return left

    def wrong(self, pin_id: str) -> bytes:
        """A well-formed value that is not the PIN."""
        right = self.secrets[pin_id]
        first = b"0" if right[:1] != b"0" else b"1"
        return first + right[1:]


class FdPort:
    """The part of pyserial's port interface :class:`SerialLink` uses, over a raw fd.

    Tests use it for the master side of a pty pair (pyserial opens the slave by path).
    """

    def __init__(self, fd: int, timeout: float = 0.05) -> None:
        self.fd = fd
        self.timeout = timeout
        self.is_open = True

    def read(self, size: int = 1) -> bytes:
        import os
        import select

        out = b""
        while len(out) < size:
            ready, _, _ = select.select([self.fd], [], [], self.timeout)
            if not ready:
                break
            chunk = os.read(self.fd, size - len(out))
            if not chunk:
                raise OSError("pty closed")
            out += chunk
        return out

    def write(self, data: bytes) -> int:
        import os

        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        import os

        if self.is_open:
            os.close(self.fd)
            self.is_open = False


ROOT = Path(__file__).resolve().parent.parent


def freeze(pid: int, within: float = 5.0) -> None:
    """SIGSTOP, then wait until every thread of ``pid`` has stopped: ``kill`` returns before
    the stop takes hold, and under load a thread may still answer one more request."""
    os.kill(pid, signal.SIGSTOP)
    end = time.monotonic() + within
    while time.monotonic() < end:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                states.append(task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop within {within} s of SIGSTOP")


def run_pytest(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess from the project root (the plugin as a user gets it)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
            str(ROOT),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


class PretendRealCard(GuardedCard, InProcessTarget):
    """The emulated card in the process, treated as a real one: every APDU passes the
    real-card guard, and its PINs come from the card config instead of the environment."""

    emulated = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        InProcessTarget.__init__(self, *args, **kwargs)  # type: ignore[arg-type]
        self.transport = self._guard(self.transport)

    def secret(self, pin_id: str) -> Secret:
        return InProcessTarget.secret(self, pin_id)
