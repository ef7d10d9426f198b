"""Card profiles: the model checks itself, is found by name, and the scenario schema is the
profile's (a second, small card's scenarios name its PINs and no JPKI one)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from harness.cards import UnknownCardProfile, card_profile
from harness.cards.jpki import PROFILE as JPKI
from harness.errors import ConfigError
from harness.scenario import load_scenarios
from tests.cards.tiny import PROFILE as TINY
from tests.support import ROOT


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


def test_the_tiny_card_touches_no_jpki_module() -> None:
    """``git grep`` for the JPKI modules in the second profile's code: nothing."""
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
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
