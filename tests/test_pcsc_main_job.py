"""The main job and the lab command: each starts (and stops) its own pcscd."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.transport.pcsc import wait_for_card
from tests.pcsc_lab import require_pcsc


def test_the_lab_command_starts_and_stops_everything(tmp_path: Path) -> None:
    require_pcsc()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "lab", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert "Ctrl-C or SIGTERM stops the lab" in lines[-1], lines
        wait_for_card("Virtual PCD 00 01", 15)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "lab stopped" in out
    time.sleep(0.05)
    assert not Path("/run/pcscd/pcscd.comm").exists()  # its pcscd is gone too


def test_smoke_through_pcscd(capsys: pytest.CaptureFixture[str]) -> None:
    require_pcsc()
    assert main(["smoke", "--via", "pcscd"]) == 0
    out = capsys.readouterr().out
    assert "via Virtual PCD 00 00" in out and "24 passed, 0 failed" in out
    assert main(["smoke", "--via", "pcscd", "--defect", "no-decrement"]) == 1
