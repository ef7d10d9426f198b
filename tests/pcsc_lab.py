"""Fixtures that bring up the real PC/SC path: pcscd (started here) and emulated cards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.emulator import EmulatedCard, MemoryStore
from harness.emulator.state import CardState
from harness.lab.pcscd import LabError, Pcscd, missing_packages
from harness.links.vicc import EmulatorServer, serve_in_thread
from harness.transport.pcsc import wait_for_card
from tests.conftest import copy_state

REQUIRED = os.environ.get("PINLOOP_REQUIRE_PCSC") == "1"


def _unavailable() -> str | None:
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return "pyscard is not installed"
    if missing_packages():
        return "missing Debian packages: " + " ".join(missing_packages())
    if os.geteuid() != 0:
        return "pcscd must run as root"
    return None


def require_pcsc() -> None:
    reason = _unavailable()
    if reason is None:
        return
    if REQUIRED:
        pytest.fail(f"PINLOOP_REQUIRE_PCSC=1 but the PC/SC path cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    require_pcsc()
    daemon = Pcscd(tmp_path_factory.mktemp("pcscd") / "pcscd.log", slots=2)
    try:
        daemon.start()
    except LabError as exc:
        pytest.fail(str(exc))
    yield daemon
    daemon.stop()


class ServedCard:
    """An emulated card served in a thread of the test process on a vpcd slot."""

    def __init__(self, state: CardState, url: str, reader: str, **card_kwargs: object) -> None:
        self.card = EmulatedCard(MemoryStore(copy_state(state)), **card_kwargs)  # type: ignore[arg-type]
        self.server = EmulatorServer(self.card, url)
        self.reader = reader
        self.thread = serve_in_thread(self.server)
        wait_for_card(reader, 5.0)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(2)
        wait_for_card(self.reader, 5.0, present=False)


def log_tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class EmulatorProcess:
    """``pinloop emulate`` in a child process, serving one card state on one URL."""

    def __init__(
        self,
        state: CardState,
        workdir: Path,
        url: str,
        *,
        defect: str | None = None,
        name: str = "emu",
    ) -> None:
        import json
        import subprocess
        import sys
        import time

        from harness.emulator import FileStore

        self.state_path = workdir / f"{name}.json"
        FileStore.create(self.state_path, copy_state(state), overwrite=True)
        ready = workdir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        self.log_path = workdir / f"{name}.log"
        args = [
            sys.executable,
            "-m",
            "harness.cli",
            "emulate",
            f"{self.state_path}@{url}",
            "--ready-file",
            str(ready),
            "-v",
        ]
        if defect:
            args += ["--defect", defect]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not start:\n{log_tail(self.log_path)}")
            time.sleep(0.01)
        self.instance_id = bytes.fromhex(json.loads(ready.read_text())[0]["instance"])

    def kill(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except Exception:
                self.kill()
