"""A verdict means what it says: only a device defect fails an item; a lab plugin's bug, a
harness ``assert`` and a file's mistake are not the device's (found by review)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from harness import safety
from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config, parse_profile
from harness.errors import ConfigError, HarnessError
from harness.run.record import StepRecord
from harness.run.runner import HookFailed, Runner
from harness.safety.guard import Refused
from harness.scenario import load_scenarios
from harness.scenario.model import Literal
from harness.targets import InProcessTarget
from tests.support import ROOT, PretendRealCard, run_pytest

LIB = ROOT / "scenarios"


def _target() -> InProcessTarget:
    return InProcessTarget(load_card_config(), parse_profile("faithful"))


def _scenario(tmp_path: Path, steps: str, tags: str = "[]") -> object:
    path = tmp_path / "s.pin.yaml"
    path.write_text(f"name: s\nrule: r\ntags: {tags}\nsteps:\n{steps}")
    return load_scenarios(path, JPKI)[0]


def test_a_step_hook_never_turns_a_defect_into_something_else() -> None:
    [scenario] = load_scenarios(LIB / "decrement-matches-query.pin.yaml", JPKI)[:1]
    runner = Runner(
        InProcessTarget(load_card_config(), parse_profile("double-decrement")), scenario
    )

    def broken(step: object, record: StepRecord) -> None:
        if record.verdict != "passed":  # it breaks on the failed step only
            raise RuntimeError("dashboard down")

    runner.on_step = broken
    with pytest.raises(AssertionError, match="tries left"):  # the defect, not the hook
        runner.run()
    record = runner.session.record
    assert record.outcome == "failed" and record.steps[1].verdict == "failed"
    assert any("dashboard down" in n for n in record.steps[1].notes)  # said, not lost


def test_a_hook_that_asserts_is_a_lab_fault_not_a_defect() -> None:
    [scenario] = load_scenarios(LIB / "correct-restores-max.pin.yaml", JPKI)[:1]
    runner = Runner(_target(), scenario)

    def asserting(step: object, record: object) -> None:
        raise AssertionError("the plugin's own sanity check")

    runner.on_step = asserting
    with pytest.raises(HookFailed, match="sanity check"):
        runner.run()
    assert runner.session.record.outcome == "error"  # a HarnessError: the lab's

    runner = Runner(_target(), scenario)
    runner.session.on_apdu = lambda cmd: (_ for _ in ()).throw(AssertionError("boom"))
    with pytest.raises(HarnessError, match="an APDU hook raised AssertionError: boom"):
        runner.run()
    assert runner.session.record.outcome == "error"


def test_a_bare_assert_in_a_run_is_an_error_in_pytest_too(tmp_path: Path) -> None:
    (tmp_path / "pinloop_probe_hooks.py").write_text(
        "def pytest_pinloop_step(session, step, record):\n    assert False, 'plugin bug'\n"
        "def pytest_pinloop_scenario(item, record):\n    raise RuntimeError('dashboard down')\n"
    )
    reports = tmp_path / "reports"
    proc = run_pytest(
        str(LIB / "status-query-is-free.pin.yaml"),
        "-p",
        "pinloop_probe_hooks",
        "--pinloop-reports",
        str(reports),
        "-k",
        "jpki-auth",
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )
    out = proc.stdout + proc.stderr
    assert "1 error" in out and "failed" not in out.split("short test summary")[-1], out[-2000:]
    assert "INTERNALERROR" not in out and "a scenario hook raised RuntimeError" in out, out[-2000:]
    assert list((reports / "records").glob("*.json")), out[-2000:]  # the outputs went on


def test_relative_tries_on_a_pin_select_are_read_not_a_false_defect(tmp_path: Path) -> None:
    scenario = _scenario(
        tmp_path,
        "  - select: {pin: jpki-auth}\n    expect: {tries: unchanged}\n",
    )
    runner = Runner(_target(), scenario)  # type: ignore[arg-type]
    runner.run()
    assert runner.session.record.steps[0].tries["jpki-auth"] == {"before": 3, "after": 3}


def test_a_raw_apdu_that_cannot_be_sent_is_the_files_mistake(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"s\.pin\.yaml:5.*apdu"):
        _scenario(tmp_path, '  - apdu: {hex: "00 A4 04 0C 05 D3"}\n')


def test_after_a_raw_apdu_the_next_step_selects_again(tmp_path: Path) -> None:
    """A READ BINARY by SFI changes the current EF: the VERIFY after it must re-select."""
    scenario = _scenario(
        tmp_path,
        "  - select: {pin: jpki-auth}\n"
        '  - apdu: {hex: "00 B0 8A 00 04"}\n'
        "  - verify: {value: right}\n    expect: {sw: ok}\n",
    )
    Runner(_target(), scenario).run()  # type: ignore[arg-type]


def test_literal_values_are_masked_wherever_they_are_shown(tmp_path: Path) -> None:
    assert "4321" not in repr(Literal("4321"))
    scenario = _scenario(
        tmp_path,
        '  - verify: {pin: jpki-auth, value: {literal: "4321"}}\n    expect: {sw: ok}\n',
        "[emulator-only]",
    )
    with pytest.raises(AssertionError) as err:
        Runner(_target(), scenario).run()  # type: ignore[arg-type]
    assert "4321" not in str(err.value) and "****" in str(err.value)


def test_a_command_the_guard_refused_is_not_recorded_as_sent(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, '  - apdu: {hex: "00 20 00 80 04 30 30 30 30"}\n')
    target = PretendRealCard(load_card_config(), parse_profile("faithful"))
    runner = Runner(target, scenario)  # type: ignore[arg-type]
    with pytest.raises(Refused):
        runner.run()
    step = runner.session.record.steps[0]
    assert step.verdict == "skipped" and step.apdus == []


def test_the_destructive_opt_in_is_a_set_of_exact_names() -> None:
    target = _target()
    with pytest.raises(TypeError, match="exact reader names"):
        safety.destructive_ok(target, target.name + ", other")  # type: ignore[arg-type]


def test_a_bare_assert_inside_a_step_is_the_harness_s_not_the_device_s(tmp_path: Path) -> None:
    """Only a DeviceDefect fails an item: an internal ``assert`` (a harness bug) is an error."""
    from harness.scenario.model import Step
    from harness.steps import StepKind, register, unregister

    @dataclass(frozen=True)
    class Buggy(Step):
        action: ClassVar[str] = "buggy"

    def run(session: object, step: object) -> None:
        raise AssertionError("relative tries need the count before the step")

    register(
        StepKind(
            "buggy",
            Buggy,
            lambda refs: {"type": "object"},
            lambda c, body, common: Buggy(**common),
            run,
        )
    )
    try:
        scenario = _scenario(tmp_path, "  - buggy: {}\n")
        runner = Runner(_target(), scenario)  # type: ignore[arg-type]
        with pytest.raises(AssertionError):
            runner.run()
        assert runner.session.record.outcome == "error"
    finally:
        unregister("buggy")


@pytest.mark.parametrize(
    ("steps", "key"),
    [
        ('  - power: cycle\n    expect: {sw: "6A82"}\n', "sw"),
        ("  - select: {app: jpki}\n    expect: {verified: true}\n", "verified"),
        ("  - select: {pin: jpki-auth}\n  - others_unchanged: {}\n    expect: {sw: ok}\n", "sw"),
        ("  - status: {pin: jpki-auth}\n    expect: {identical: true}\n", "identical"),
        ('  - select: {pin: jpki-auth}\n    expect: {sw: "6A82", length: 99}\n', "sw"),
        ("  - read: {ef: '000A'}\n    expect: {signature: valid}\n", "signature"),
    ],
)
def test_an_expectation_a_step_does_not_check_is_refused_at_load(
    tmp_path: Path, steps: str, key: str
) -> None:
    """Found by review: each of these loaded and passed on any card, checked by nobody."""
    with pytest.raises(ConfigError, match=rf"expect\.{key} is not something this step checks"):
        _scenario(tmp_path, steps)
