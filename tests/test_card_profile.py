"""Card profiles: the model checks itself, is found by name, and the scenario schema is the
profile's (a second, small card's scenarios name its PINs and no JPKI one)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from harness.cards import UnknownCardProfile, card_profile
from harness.cards.jpki import PROFILE as JPKI
from harness.errors import ConfigError
from harness.scenario import load_scenarios
from tests.cards.tiny import PROFILE as TINY
from tests.pcsc_lab import require_pcsc
from tests.support import ROOT, run_pytest


def test_profiles_by_name() -> None:
    assert card_profile("jpki") is JPKI
    assert card_profile("tests.cards.tiny:PROFILE") is TINY
    with pytest.raises(UnknownCardProfile, match="unknown card profile 'nope'"):
        card_profile("nope")
    with pytest.raises(UnknownCardProfile, match="cannot be loaded"):
        card_profile("tests.cards.tiny:NOPE")
    with pytest.raises(UnknownCardProfile, match="is not a CardProfile"):
        card_profile("tests.cards.tiny:CHANGE")


def test_the_jpki_profile_keeps_the_guards_facts() -> None:
    """What the guard knew before the profile (the table of harness/cards/jpki.py)."""
    f = JPKI.guard_facts
    assert f.max_tries == {
        "jpki-auth": 3,
        "jpki-sign": 5,
        "kenhojo-pin": 3,
        "juki-pin": 3,
        "common-pin": 3,
    }
    assert f.change == {(0x00, 0x24), (0x80, 0x32)}
    assert f.change_command["juki-pin"] == (0x80, 0x32, 0x00)
    assert f.change_command["jpki-sign"] == (0x00, 0x24, 0x01)
    assert "kenhojo-a" not in f.change_command
    assert f.pins[("jpki", 0x0018)] == "jpki-auth"
    assert JPKI.env_name("jpki-auth") == "PINLOOP_PIN_JPKI_AUTH"
    assert set(JPKI.pin_sets) == {"all", "user", "changeable", "settable", "card-face", "jpki"}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"pins": TINY.pins * 2}, "a PIN id given twice"),
        (
            {"pins": (dataclasses.replace(TINY.pins[0], app="other"),)},
            "user-pin is in no application",
        ),
        ({"pins": (dataclasses.replace(TINY.pins[0], fid=0x3F00),)}, "EF is not an SFI"),
        ({"extra_pin_sets": {"mine": ("jpki-auth",)}}, "PIN set mine names unknown PINs"),
    ],
)
def test_a_profile_checks_itself(change: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        dataclasses.replace(TINY, **change)  # type: ignore[arg-type]


SCENARIO = """\
name: a wrong PIN costs one try
rule: decrement
for_each: {pin: all}
steps:
  - select: {pin: "{pin}"}
  - verify: {value: wrong}
    expect: {sw: 63Cx, tries: one-less}
  - verify: {value: right}
    expect: {sw: ok, tries: max}
"""


def test_a_file_is_loaded_for_its_card(tmp_path: Path) -> None:
    path = tmp_path / "a.pin.yaml"
    path.write_text(SCENARIO)
    tiny = load_scenarios(path, TINY)
    assert [s.params["pin"] for s in tiny] == ["user-pin"] and tiny[0].card == "tiny"
    assert len(load_scenarios(path, JPKI)) == len(JPKI.pins)
    # a JPKI PIN is unknown to the tiny card: file:line, with the tiny card's PINs
    path.write_text(SCENARIO.replace('"{pin}"', "jpki-auth").replace("for_each: {pin: all}\n", ""))
    with pytest.raises(ConfigError) as err:
        load_scenarios(path, TINY)
    assert f"{path}:4" in err.value.render() and "one of user-pin" in err.value.render()
    load_scenarios(path, JPKI)
    # nor are its PIN sets, nor its keys
    path.write_text(SCENARIO.replace("{pin: all}", "{pin: jpki}"))
    with pytest.raises(ConfigError, match="jpki"):
        load_scenarios(path, TINY)
    path.write_text("name: n\nrule: r\nsteps:\n  - sign: {key: auth}\n")
    with pytest.raises(ConfigError, match=r"a.pin.yaml:4"):
        load_scenarios(path, TINY)
    load_scenarios(path, JPKI)


#: the second card: its profile, its emulator and its scenarios
TINY_FILES = ("tests/cards/tiny.py", "tests/cards/tiny_card.py", "tests/cards/tiny-scenarios")


def test_the_tiny_card_touches_no_jpki_module() -> None:
    """``git grep`` for the JPKI modules in the second profile's code: nothing."""
    listed = subprocess.run(
        ["git", "ls-files", "--", *TINY_FILES], capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    assert "tests/cards/tiny_card.py" in listed and len(listed) >= 8, listed
    proc = subprocess.run(
        [
            "git",
            "grep",
            "-n",
            "-i",
            "-E",
            r"cards\.jpki|harness\.emulator|jpki",
            "--",
            "tests/cards",
            *TINY_FILES,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout


TINY_RUN = (
    str(ROOT / "tests/cards/tiny-scenarios"),
    "-p",
    "no:randomly",
    "-o",
    r"pinloop_file_pattern=.+\.tiny\.yaml$",
    "--pinloop-card-profile",
    "tests.cards.tiny:PROFILE",
)
TINY_SCENARIOS = len(list((ROOT / "tests/cards/tiny-scenarios").glob("*.tiny.yaml")))


def test_the_tiny_cards_scenarios_pass_in_process() -> None:
    """The second card's library-style scenarios on its own emulator, in the process."""
    proc = run_pytest(*TINY_RUN)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"{TINY_SCENARIOS} passed" in out.strip().splitlines()[-1], out


def test_the_tiny_cards_scenarios_pass_through_pcscd() -> None:
    """The same scenarios with the tiny card behind pcscd + vpcd, reached with pyscard."""
    require_pcsc()
    proc = run_pytest(*TINY_RUN, "--pinloop-target", "pcscd")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"{TINY_SCENARIOS} passed" in out.strip().splitlines()[-1], out


def test_a_tiny_card_that_never_decrements_fails_the_lock_rule() -> None:
    """The check can fail: a defect of the tiny card's emulator breaks its lock rule."""
    proc = run_pytest(*TINY_RUN, "--pinloop-defect", "never-decrements")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    broken = set(re.findall(r"^rule '([a-z0-9-]+)' broken on ", out, re.M))
    assert "lock-at-exactly-n" in broken and "status-query-is-free" not in broken, broken
    assert "Traceback" not in out


def test_the_tiny_card_emulator_is_refused_for_another_card() -> None:
    """A profile naming no loadable emulator is a configuration fault; the JPKI card keeps
    the built-in emulator."""
    from harness.cards.emulated import emulation_for

    assert emulation_for(JPKI, None) is None and emulation_for(None, "x") is None
    with pytest.raises(ConfigError, match="cannot be loaded"):
        emulation_for(dataclasses.replace(TINY, emulator="tests.cards.tiny_card:NOPE"), None)
    with pytest.raises(ConfigError, match="implements the tiny card"):
        emulation_for(dataclasses.replace(TINY, name="other"), None)
    with pytest.raises(ConfigError, match="unknown defect"):
        emulation_for(TINY, "ok-when-blocked")
