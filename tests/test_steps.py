"""The step registry: the schema, the loader and the runner take every step kind from it, so a
new kind is one module (here one block of this file) and nothing else changes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.apdu import commands as C
from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config, parse_profile
from harness.errors import ConfigError
from harness.run.expect import check
from harness.run.runner import Runner
from harness.run.session import CardSession
from harness.scenario import load_scenarios, schema
from harness.scenario.model import Step
from harness.scenario.parse import Parse
from harness.scenario.schema import CardRefs
from harness.steps import BUILT_IN, StepKind, kinds, register, unregister
from harness.targets import InProcessTarget
from tests.support import ROOT


# -- a kind a lab adds: GET CHALLENGE ----------------------------------------------------------
@dataclass(frozen=True)
class Challenge(Step):
    action: ClassVar[str] = "challenge"
    length: int = 8


def _schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {"length": {"type": "integer", "minimum": 1, "maximum": 255}},
    }


def _parse(c: Parse, body: Any, common: dict[str, Any]) -> Challenge:
    return Challenge(**common, length=int(body.get("length", 8)))


def _run(session: CardSession, s: Challenge) -> None:
    first = session.tx(C.get_challenge(s.length))
    check(session, s, first, None, None)
    if first.ok and session.tx(C.get_challenge(s.length)).data == first.data:
        raise session.fail("two challenges", "different", "the same")


CHALLENGE = StepKind("challenge", Challenge, _schema, _parse, _run, doc="GET CHALLENGE, twice")


@pytest.fixture
def challenge() -> Iterator[StepKind]:
    register(CHALLENGE)
    yield CHALLENGE
    unregister("challenge")


FILE = """name: challenge
rule: challenge-fresh
steps:
  - challenge: {length: %s}
    expect: {sw: ok, length: 8}
"""


def test_every_built_in_kind_is_registered_in_order() -> None:
    assert tuple(kinds()) == BUILT_IN
    for action, kind in kinds().items():
        assert kind.action == action == kind.model.action
        assert kind.doc, f"{action} has no doc line"


def test_a_new_kind_is_loaded_run_and_checked(challenge: StepKind, tmp_path: Path) -> None:
    path = tmp_path / "challenge.pin.yaml"
    path.write_text(FILE % 8)
    [scenario] = load_scenarios(path, JPKI)
    assert isinstance(scenario.steps[0], Challenge)
    assert "challenge" in schema.steps(JPKI)
    runner = Runner(InProcessTarget(load_card_config(), parse_profile("faithful")), scenario)
    runner.run()
    assert sum(line.startswith(">> 00 84") for line in runner.session.trace) == 2

    path.write_text(FILE % 0)  # its own schema piece holds
    with pytest.raises(ConfigError, match=r"challenge\.pin\.yaml:4") as err:
        load_scenarios(path, JPKI)
    assert "minimum" in str(err.value) or "less than" in str(err.value)


def test_an_unregistered_kind_is_an_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "challenge.pin.yaml"
    path.write_text(FILE % 8)
    with pytest.raises(ConfigError, match="unknown key 'challenge'") as err:
        load_scenarios(path, JPKI)
    assert "exactly one action: select, verify" in str(err.value)


def test_a_kind_added_first_comes_after_the_built_in_ones() -> None:
    """Registered before anything asked for the kinds, it still does not go first, and it
    cannot take a built-in action."""
    import subprocess
    import sys

    code = (
        "from tests.test_steps import CHALLENGE\n"
        "from harness.steps import BUILT_IN, StepKind, kinds, register\n"
        "register(CHALLENGE)\n"
        "assert tuple(kinds()) == (*BUILT_IN, 'challenge'), tuple(kinds())\n"
        "try:\n"
        "    register(StepKind('verify', *[getattr(CHALLENGE, f) for f in "
        "('model', 'schema', 'parse', 'run')]))\n"
        "except ValueError as e:\n"
        "    assert 'registered already' in str(e)\n"
        "else:\n"
        "    raise SystemExit('a built-in action was taken')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_kind_cannot_take_an_action_twice(challenge: StepKind) -> None:
    with pytest.raises(ValueError, match="registered already"):
        register(StepKind("verify", Challenge, _schema, _parse, _run))
    with pytest.raises(ValueError, match="built-in"):
        unregister("verify")
