"""Python tests share the scenarios' targets: the ``pinloop_target`` and ``pinloop_session``
fixtures, with the same real-card guard, begin and end."""

from __future__ import annotations

from pathlib import Path

from tests.support import ROOT, run_pytest

TESTS = """
import pytest
from harness.apdu import commands as C
from harness.safety.guard import Refused


def test_a_status_query(pinloop_session):
    assert pinloop_session.tries("jpki-auth") == 3


def test_a_wrong_pin(pinloop_session):
    session = pinloop_session
    wrong = session.value("jpki-auth", "wrong")
    session.select_pin("jpki-auth")
    if session.target.emulated:
        assert session.tx(C.verify(wrong)).sw == 0x63C2
    else:  # nothing declared: the guard lets no try be spent
        with pytest.raises(Refused):
            session.tx(C.verify(wrong))
        assert session.tries("jpki-auth") == 3


def test_the_target_is_the_pools(pinloop_target, pinloop_session):
    assert pinloop_session.target is pinloop_target
"""

PRETEND = """
from harness.emulator import load_card_config, parse_profile
from harness.targets import TARGETS, TargetKind
from tests.support import PretendRealCard

TARGETS.register(
    "pretend",
    TargetKind(
        lambda arg, setup: PretendRealCard(load_card_config(), parse_profile("faithful")),
        "pretend",
        "the emulated card treated as a real one",
    ),
)
"""


def _run(tmp_path: Path, target: str) -> str:
    (tmp_path / "test_lab_python.py").write_text(TESTS)
    (tmp_path / "pinloop_pretend_kind.py").write_text(PRETEND)
    proc = run_pytest(
        str(tmp_path / "test_lab_python.py"),
        "-p",
        "pinloop_pretend_kind",
        "--pinloop-target",
        target,
        "-p",
        "no:randomly",
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def test_python_tests_run_on_the_emulated_target(tmp_path: Path) -> None:
    assert "3 passed" in _run(tmp_path, "inprocess")


def test_python_tests_on_a_real_card_pass_the_guard(tmp_path: Path) -> None:
    """The same tests on a card that is not the emulator: the wrong PIN is refused by the
    guard, and the PIN is where it was."""
    assert "3 passed" in _run(tmp_path, "pretend")


FAULT = """
from harness.errors import TransportTimeout

FIRST = []


def test_a_lab_fault_in_the_middle(pinloop_session, monkeypatch):
    FIRST.append(pinloop_session.target)

    def gone(cmd):
        raise TransportTimeout("the reader did not answer in 1 s")

    monkeypatch.setattr(pinloop_session.target.transport, "transmit", gone)
    pinloop_session.tries("jpki-auth")


def test_the_next_test_has_the_target_set_up_afresh(pinloop_target, pinloop_session):
    assert pinloop_target is not FIRST[0]
    assert pinloop_session.tries("jpki-auth") == 3


def test_a_failed_assert_is_the_tests_own_verdict(pinloop_session):
    assert pinloop_session.tries("jpki-auth") == 2
"""


def test_a_lab_fault_in_a_python_test_is_an_error_and_the_target_is_set_up_again(
    tmp_path: Path,
) -> None:
    """A lab fault raised in a Python test is an error (in the terminal and in JUnit), not a
    failure; the pool's target is closed and the next test gets a fresh one. The test's own
    assert stays a failure."""
    (tmp_path / "test_lab_fault.py").write_text(FAULT)
    junit = tmp_path / "junit.xml"
    proc = run_pytest(
        str(tmp_path / "test_lab_fault.py"),
        "--pinloop-target",
        "inprocess",
        "-p",
        "no:randomly",
        f"--junitxml={junit}",
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )
    out = proc.stdout + proc.stderr
    assert "1 failed, 1 passed, 1 error" in out, out[-3000:]
    assert "ERROR" in out and "test_a_lab_fault_in_the_middle" in out
    xml = junit.read_text()
    assert xml.count("<error") == 1 and xml.count("<failure") == 1, xml
