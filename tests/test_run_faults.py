"""Faults injected into a real run through pcscd: each is a lab fault on the scenario it hit,
with the pcscd log attached; that scenario stops, every other one passes, nothing hangs, and
the APDU in flight is never sent again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.pcsc_lab import require_pcsc
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
    assert "1 failed, 19 passed" in out, out[-3000:]
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
