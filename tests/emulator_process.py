"""``pinloop emulate`` in a child process: one card state served on one link URL.

For tests and benchmarks that need the emulator to be a process of its own (so that it can be
killed, or so that its work does not share the caller's interpreter).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.emulator.state import CardState, FileStore
from harness.lab.pcscd import LabError


class EmulatorProcess:
    """Starts at construction; ready once its ready file names the instance id."""

    def __init__(
        self,
        state: CardState,
        workdir: Path,
        url: str,
        *,
        defect: str | None = None,
        name: str = "emu",
        extra: tuple[str, ...] = (),
        timeout: float = 10.0,
    ) -> None:
        self.state_path = workdir / f"{name}.json"
        FileStore.create(self.state_path, state.copy(), overwrite=True)
        self.ready = workdir / f"{name}.ready"
        self.log_path = workdir / f"{name}.log"
        self.args = [
            sys.executable,
            "-m",
            "harness.cli",
            "emulate",
            f"{self.state_path}@{url}",
            "--ready-file",
            str(self.ready),
            "-v",
            *extra,
        ]
        if defect:
            self.args += ["--defect", defect]
        self.timeout = timeout
        self._start()

    def restart(self) -> None:
        """A new emulator process on the same card state (what it wrote is kept)."""
        if self.proc.poll() is None:
            self.stop()
        self._start()

    def _start(self) -> None:
        ready = self.ready
        ready.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise LabError(f"emulator did not start:\n{self.log_tail()}")
            time.sleep(0.01)
        self.instance_id = bytes.fromhex(json.loads(ready.read_text())[0]["instance"])

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after 5 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
