"""Card knowledge lives in card profiles; the emulator implements one. Loading scenarios and
running them on a real reader needs neither the emulator nor ``cryptography`` (which only the
emulator's personalisation and a ``signature: valid`` check use)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness.cards.jpki import PROFILE as JPKI
from harness.lab.pcscd import Pcscd
from harness.targets import env_name
from tests.pcsc_lab import EmulatorProcess
from tests.support import ROOT, run_pytest

FORBIDDEN = re.compile(r"^(harness\.emulator|cryptography)(\.|$)")
_IMPORTTIME = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|( *)(\S+)$")


def forbidden(modules: list[str]) -> list[str]:
    """The modules of ``modules`` that a scenario or real-reader run must not import."""
    return sorted(m for m in modules if FORBIDDEN.match(m))


def imported(code: str) -> list[str]:
    """Every module ``python -X importtime -c code`` imports (from its report, in a fresh
    interpreter run from the project root)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    found = [m.group(2) for line in proc.stderr.splitlines() if (m := _IMPORTTIME.match(line))]
    assert "harness" in found, proc.stderr[-2000:]  # the report was read
    return found


def test_the_check_finds_the_emulator_and_cryptography() -> None:
    """The check itself: importing the emulator is caught, and so is cryptography."""
    got = forbidden(imported("import harness.emulator"))
    assert "harness.emulator" in got and "harness.emulator.card" in got, got
    assert "cryptography" in got, got
    assert forbidden(["harness.emulatorx", "cryptographyx", "harness.cards.jpki"]) == []


def test_loading_scenarios_imports_no_emulator() -> None:
    """``import harness.scenario`` and loading the whole library for the JPKI card."""
    assert forbidden(imported("import harness.scenario")) == []
    code = (
        "import pathlib; from harness.cards import card_profile; "
        "from harness.scenario import load_scenarios; "
        "[load_scenarios(f, card_profile('jpki')) "
        "for f in sorted(pathlib.Path('scenarios').glob('*.pin.yaml'))]"
    )
    assert forbidden(imported(code)) == []


def test_the_real_reader_path_imports_no_emulator() -> None:
    """What a ``reader:`` run loads before its first scenario: the plugin, the target, the
    runner, the guard, the PC/SC transport and the reports."""
    code = (
        "import harness.plugin, harness.targets, harness.run.runner, harness.safety.guard, "
        "harness.transport.pcsc, harness.report.summary, harness.report.allure_report, "
        "harness.plugin.stations, harness.steps.tear"
    )
    assert forbidden(imported(code)) == []


def test_a_reader_run_imports_no_emulator(
    pcscd: Pcscd, template_state: object, tmp_path: Path
) -> None:
    """A whole ``reader:`` run (the emulated card in a process of its own, addressed as a real
    reader): the run's process never imported the emulator or cryptography."""
    slot = pcscd.slots[0]
    emu = EmulatorProcess(template_state, tmp_path, slot.url)  # type: ignore[arg-type]
    modules = tmp_path / "modules.txt"
    files = [
        str(ROOT / "scenarios" / "status-query-is-free.pin.yaml"),
        str(ROOT / "scenarios" / "correct-restores-max.pin.yaml"),
    ]
    try:
        from harness.transport.pcsc import wait_for_card

        wait_for_card(slot.reader, 15)
        env = {env_name("jpki-auth", JPKI): "1234", env_name("jpki-sign", JPKI): "PINLOOP1"}
        env["PINLOOP_TEST_MODULES"] = str(modules)
        proc = run_pytest(
            "-p",
            "tests.import_probe",
            "-p",
            "no:randomly",
            "--pinloop-target",
            f"reader:^{slot.reader}$",
            "-k",
            "jpki-auth or jpki-sign",
            *files,
            env=env,
            timeout=300,
        )
    finally:
        emu.stop()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "2 passed" in out, out[-3000:]
    names = modules.read_text().split()
    assert "harness.run.runner" in names and "harness.safety.guard" in names  # it did run scenarios
    assert forbidden(names) == [], out[-2000:]


def test_a_run_without_allure_does_not_import_it(tmp_path: Path) -> None:
    """Outputs are loaded when used: without --alluredir, and with allure-pytest switched off,
    a run imports neither allure nor pinloop's Allure output, and still writes its own."""
    modules = tmp_path / "modules.txt"
    reports = tmp_path / "reports"
    proc = run_pytest(
        "-p",
        "tests.import_probe",
        "-p",
        "no:allure_pytest",
        "--pinloop-reports",
        str(reports),
        str(ROOT / "scenarios" / "status-query-is-free.pin.yaml"),
        env={"PINLOOP_TEST_MODULES": str(modules)},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    names = modules.read_text().split()
    assert "harness.run.runner" in names  # it ran scenarios
    assert [n for n in names if n.startswith(("allure", "harness.report.allure"))] == []
    assert (reports / "summary.json").exists() and list((reports / "records").glob("*.json"))
