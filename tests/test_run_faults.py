"""Faults injected into a real run through pcscd: each is a lab fault on the scenario it hit,
with the pcscd log attached; that scenario stops, every other one passes, nothing hangs, and
the APDU in flight is never sent again."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import CardState
from harness.lab.pcscd import Pcscd
from harness.targets import env_name
from tests.pcsc_lab import EmulatorProcess, require_pcsc
from tests.support import ROOT, run_pytest

HIT = "lock-at-exactly-n[jpki-auth]"


@pytest.mark.parametrize(
    "fault", ["kill-emulator", "restart-pcscd", "remove-card", "unplug-reader"]
)
def test_a_fault_stops_its_scenario_and_the_run_goes_on(tmp_path: Path, fault: str) -> None:
    require_pcsc()
    log = tmp_path / "card.json"
    results = tmp_path / "allure"
    t = time.monotonic()
    proc = run_pytest(
        str(ROOT / "scenarios" / "lock-at-exactly-n.pin.yaml"),
        str(ROOT / "scenarios" / "correct-restores-max.pin.yaml"),
        "-p",
        "tests.fault_injection",
        "--pinloop-target",
        "pcscd",
        "--alluredir",
        str(results),
        "--pinloop-reports",
        str(tmp_path),
        "--junitxml",
        str(tmp_path / "junit.xml"),
        env={
            # the 5th APDU of the item is its first wrong VERIFY (a state-changing command)
            "PINLOOP_INJECT": f"{fault}:{HIT}:5",
            "PINLOOP_INJECT_LOG": str(log),
        },
        timeout=300,
    )
    took = time.monotonic() - t
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    # a lab fault is an error in pytest's count and in JUnit too, not a failure
    assert "19 passed, 1 error" in out, out[-3000:]
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<error") == 1 and "<failure" not in junit
    assert 'errors="1"' in junit and 'failures="0"' in junit
    assert "lab fault on pcscd" in out and "pcscd log (last lines)" in out, out[-3000:]
    assert took < 120, f"{took:.0f} s"
    # the summary counts it as the lab's error, not the card's failure
    summary = json.loads((tmp_path / "summary.json").read_text())
    outcomes = {r["scenario"]: r["outcome"] for r in summary["results"]}
    assert [s for s, o in outcomes.items() if o != "passed"] == [
        "wrong ×N locks at exactly N[pin=jpki-auth]"
    ]
    assert outcomes["wrong ×N locks at exactly N[pin=jpki-auth]"] == "error"
    # Allure: broken, with the pcscd log attached
    hit = [
        r
        for r in (json.loads(p.read_text()) for p in results.glob("*-result.json"))
        if "jpki-auth" in r["name"] and "locks at exactly" in r["name"]
    ]
    assert [r["status"] for r in hit] == ["broken"]
    assert any(a["name"] == "pcscd log (last lines)" for a in hit[0]["attachments"])
    # never retried: after the fault, the card got nothing more of that scenario (the APDU
    # in flight at most once, had it arrived before the link went down)
    record = json.loads(log.read_text())
    fault_at = record["fault"]
    after = [s["apdu"] for s in record["seen"][fault_at["at"] :] if s["item"] == HIT]
    assert after in ([], [fault_at["apdu"]]), after


def _real_reader_run(
    pcscd: Pcscd, emu: EmulatorProcess, fault: str, tmp_path: Path, slot: int = 0
) -> tuple[str, dict[str, str]]:
    """Three scenarios on jpki-auth through a real-reader target; ``fault`` hits the emulator
    process at the first VERIFY with the PIN (the start of the first scenario)."""
    proc = run_pytest(
        *(
            str(ROOT / "scenarios" / f)
            for f in (
                "status-query-is-free.pin.yaml",
                "signing-auth-key.pin.yaml",
                "verify-latency.pin.yaml",
            )
        ),
        "-p",
        "tests.host_faults",
        "-p",
        "no:randomly",
        "-k",
        "jpki-auth or signing",
        "--pinloop-target",
        f"reader:^{pcscd.slots[slot].reader}$",
        "--pinloop-reports",
        str(tmp_path),
        env={
            "PINLOOP_TEST_FAULT": fault,
            "PINLOOP_TEST_FAULT_ON": "1234",
            "PINLOOP_TEST_KILL_PID": str(emu.proc.pid),
            env_name("jpki-auth", JPKI): "1234",
            env_name("jpki-sign", JPKI): "PINLOOP1",
        },
        timeout=300,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    return proc.stdout, {r["scenario"]: r["outcome"] for r in summary["results"]}


def test_an_emulator_back_within_seconds_costs_one_scenario_only(
    pcscd: Pcscd, template_state: CardState, tmp_path: Path
) -> None:
    """Killed at the start of the first scenario and started again 1.5 s later on the same
    card state: that scenario is the lab's error, the next set-up waits for the card."""
    emu = EmulatorProcess(template_state, tmp_path, pcscd.slots[0].url)
    killed = threading.Event()

    def bring_back() -> None:
        end = time.monotonic() + 120
        while emu.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        killed.set()
        time.sleep(1.5)
        emu.restart()

    helper = threading.Thread(target=bring_back, daemon=True)
    helper.start()
    try:
        out, outcomes = _real_reader_run(pcscd, emu, "kill", tmp_path)
    finally:
        helper.join(30)
        emu.stop()
    assert killed.is_set()
    assert list(outcomes.values()) == ["error", "passed", "passed"], out[-3000:]
    last = out.splitlines()[-1]
    assert "2 passed" in last and "1 error" in last, out[-2000:]
    assert "lab fault on reader:" in out


def test_a_hung_emulator_is_reported_as_not_answering(
    pcscd: Pcscd, template_state: CardState, tmp_path: Path
) -> None:
    """SIGSTOP: the VERIFY in flight meets its deadline; what every later item says is that
    cause, not what the fresh set-up ran into (a sharing violation with the hung command)."""
    emu = EmulatorProcess(template_state, tmp_path, pcscd.slots[0].url)
    try:
        out, outcomes = _real_reader_run(pcscd, emu, "stop", tmp_path)
    finally:
        os.kill(emu.proc.pid, signal.SIGCONT)
        emu.stop()
    assert list(outcomes.values()) == ["error", "error", "error"], out[-3000:]
    first = next(line for line in out.splitlines() if "lab fault on reader:" in line)
    assert "deadline" in first or "did not answer" in first, out[-3000:]
    later = [line for line in out.splitlines() if "broke earlier" in line]
    assert later and all("deadline" in x or "did not answer" in x for x in later), out[-3000:]


def test_a_full_disk_under_the_emulator_is_named_as_such(
    pcscd: Pcscd, template_state: CardState, tmp_path: Path
) -> None:
    """The emulated card's state on a full tmpfs: its writes fail, it answers 65 81 (memory
    failure), and the lab is told that, not that the PIN given is wrong. On slot 1: slot 0
    may still be settling from the test before, whose emulator was stopped mid-command (its
    reset fails, and pcscd can take more than 5 s to see the next emulator's card)."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    emu = None
    try:
        emu = EmulatorProcess(template_state, mnt, pcscd.slots[1].url)
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        out, outcomes = _real_reader_run(pcscd, emu, "", tmp_path / "reports", slot=1)
        (mnt / "filler").unlink()
        emu.stop()
        from harness.emulator import FileStore

        store = FileStore.open(emu.state_path)
        try:
            assert store.state.pins["jpki-auth"].remaining == 3  # nothing was half-written
        finally:
            store.close()
    finally:
        if emu is not None:
            emu.stop()
        subprocess.run(["umount", str(mnt)], check=False)
    # the first start meets it; the guard then stops the card (every start would do the same)
    assert list(outcomes.values()) == ["error", "skipped", "skipped"], out[-3000:]
    assert "65 81" in out or "6581" in out, out[-3000:]
    assert "memory failure" in out and "is not accepted" not in out, out[-3000:]
