"""Declared capabilities: what a target can do decides what runs on it and what it refuses.

A target declares its capabilities (its class, less what one target lacks, with its reader
profile's); a scenario needs those of its tags, its steps and its ``requires:``. A scenario a
target cannot run is skipped with the missing capability named; what only a card with a
capability allows is refused on any other while a scenario runs, whatever its tags
(:mod:`harness.safety`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import safety
from harness.capabilities import EMULATED, READER, TAG_REQUIRES, Capability
from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config, parse_profile
from harness.run.runner import Runner
from harness.safety.guard import UnsafeStep
from harness.scenario import load_scenarios
from harness.scenario.model import Scenario
from harness.targets import InProcessTarget, Target
from harness.targets.reader_profile import load_profile
from tests.support import ROOT, PretendRealCard, run_pytest

LIB = ROOT / "scenarios"
C = Capability


def _lib(name: str, pin: str = "jpki-auth") -> Scenario:
    return next(s for s in load_scenarios(LIB / name, JPKI) if s.params.get("pin", pin) == pin)


def _file(tmp_path: Path, text: str, name: str = "s.pin.yaml") -> Scenario:
    path = tmp_path / name
    path.write_text(text)
    return load_scenarios(path, JPKI)[0]


def _without(*lacking: Capability) -> InProcessTarget:
    """The in-process emulated card, declaring everything an emulated target does but
    ``lacking`` (a lab's own kind of target would declare its own set the same way)."""

    class Partial(InProcessTarget):
        declared = EMULATED - set(lacking)

    return Partial(load_card_config(), parse_profile("faithful"))


# -- what each target declares ------------------------------------------------------------------
def test_the_emulated_target_has_everything_but_the_reader_interface() -> None:
    target = InProcessTarget(load_card_config(), parse_profile("faithful"))
    assert target.capabilities == EMULATED | {C.EXTENDED_APDU}  # the in-process profile's
    assert target.emulated


def test_a_guarded_card_has_only_its_readers_capabilities() -> None:
    """PretendRealCard is the in-process target behind the guard: its class would declare
    every emulator capability; the guard's part declares none, and wins."""
    real = PretendRealCard(load_card_config(), parse_profile("faithful"))
    assert real.capabilities <= READER
    assert not real.emulated
    for capability in (C.LITERAL_PINS, C.FRESH_PINS, C.TEST_REINIT, C.WRITE_POINTS):
        with pytest.raises(UnsafeStep, match=str(capability)):
            safety.refuse_without(real, capability)


def test_an_emulator_without_reset_codes_lacks_test_reinit() -> None:
    from harness.cards import card_profile
    from harness.cards.emulated import emulation_for

    tiny = card_profile("tests.cards.tiny:PROFILE")
    emulation = emulation_for(tiny, None)
    assert emulation is not None
    target = InProcessTarget(None, None, emulation=emulation)
    assert C.TEST_REINIT not in target.capabilities
    assert C.EMULATOR in target.capabilities
    with pytest.raises(UnsafeStep, match="needs test-reinit"):
        target.reset_code("window")


def test_a_reader_profile_gives_reader_capabilities_only(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: r\nmatch: '^R'\ninterface: contactless\nextended_apdu: true\n"
        "power_switch: {kind: relay, url: /dev/ttyUSB0}\n"
    )
    assert load_profile(path).capabilities == {C.CONTACTLESS, C.EXTENDED_APDU, C.MID_COMMAND_CUT}
    path.write_text("name: r\nmatch: '^R'\ninterface: contact\n")
    assert load_profile(path).capabilities == {C.CONTACT}  # no extended APDUs unless said
    path.write_text("name: r\nmatch: '^R'\ninterface: virtual\nextended_apdu: false\n")
    assert load_profile(path).capabilities == frozenset()


# -- what a scenario needs ----------------------------------------------------------------------
def test_tags_stand_for_capabilities() -> None:
    want = {
        "destructive": {C.BLOCK_PINS},
        "emulator-only": {C.EMULATOR},
        "needs-reinit": {C.TEST_REINIT},
    }
    assert want == TAG_REQUIRES
    assert _lib("reinit-window.pin.yaml").requires == {
        C.BLOCK_PINS: "tag destructive",
        C.TEST_REINIT: "tag needs-reinit",
        C.FRESH_PINS: "reinit step, line 13",
    }


@pytest.mark.parametrize(
    ("steps", "tags", "needs"),
    [
        ("  - tear: {}\n", "destructive, emulator-only", {C.WRITE_POINTS: "tear of verify"}),
        (
            "  - tear: {delays_us: [0, 100]}\n",
            "destructive",
            {C.MID_COMMAND_CUT: "tear with delays_us"},
        ),
        (
            "  - tear: {command: reinit}\n",
            "destructive, emulator-only, needs-reinit",
            {
                C.WRITE_POINTS: "tear of reinit",
                C.TEST_REINIT: "tear of reinit",
                C.FRESH_PINS: "tear of reinit",
            },
        ),
        ("  - verify: {value: {literal: '1234'}}\n", "emulator-only", {C.LITERAL_PINS: "verify"}),
        ("  - read: {ef: '0001', sfi: true, length: 1000}\n", "", {C.EXTENDED_APDU: "read"}),
        ("  - apdu: {hex: '00 B0 00 00 00 03 E8'}\n", "", {C.EXTENDED_APDU: "apdu"}),
        ("  - apdu: {hex: '00 B0 00 00 00'}\n", "", {}),
        ("  - sign: {key: auth}\n    expect: {signature: valid}\n", "", {C.EXTENDED_APDU: "sign"}),
    ],
)
def test_steps_need_capabilities(
    tmp_path: Path, steps: str, tags: str, needs: dict[Capability, str]
) -> None:
    text = f"name: n\nrule: r\ntags: [{tags}]\nsteps:\n  - select: {{pin: jpki-auth}}\n{steps}"
    scenario = _file(tmp_path, text)
    got = dict(scenario.needs)
    assert set(got) == set(needs)
    for capability, what in needs.items():
        assert got[capability].startswith(what) and "line 6" in got[capability], got


def test_requires_lists_more(tmp_path: Path) -> None:
    text = "name: n\nrule: r\nrequires: [contactless, extended-apdu]\nsteps:\n  - power: cycle\n"
    assert _file(tmp_path, text).requires == {
        C.CONTACTLESS: "requires:",
        C.EXTENDED_APDU: "requires:",
    }
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match=r"requires\.0"):
        _file(tmp_path, text.replace("contactless", "telepathy"))


# -- which scenario runs where ------------------------------------------------------------------
def test_a_target_lacking_a_capability_skips_with_its_name(tmp_path: Path) -> None:
    reinit = _lib("reinit-window.pin.yaml")
    assert safety.skip_reason(reinit, _without()) is None
    why = safety.skip_reason(reinit, _without(C.TEST_REINIT))
    assert why == (
        "needs test-reinit (tag needs-reinit), which emulated (in-process) does not have"
    )
    tear = _lib("tearing-verify.pin.yaml")
    why = safety.skip_reason(tear, _without(C.WRITE_POINTS, C.EMULATOR))
    assert why is not None and why.startswith("needs emulator (tag emulator-only), write-points")


def test_a_real_reader_runs_destructive_scenarios_only_when_opted_in() -> None:
    real = PretendRealCard(load_card_config(), parse_profile("faithful"))
    lock = _lib("lock-at-exactly-n.pin.yaml")
    why = safety.skip_reason(lock, real)
    assert why is not None
    assert f"--pinloop-destructive-reader '{real.name}'" in why and "block-pins" in why
    assert not safety.destructive_ok(real)
    assert safety.skip_reason(lock, real, [real.name]) is None
    assert safety.destructive_ok(real, [real.name])
    assert safety.skip_reason(lock, real, [real.name + " 01"]) is not None  # exact name only
    # the opt-in gives block-pins and nothing else: the emulator's mechanisms stay out
    why = safety.skip_reason(_lib("reinit-window.pin.yaml"), real, [real.name])
    assert why is not None and why.startswith("needs test-reinit (tag needs-reinit)")


def test_the_plugin_skips_with_the_missing_capability(tmp_path: Path) -> None:
    """Through pytest: the in-process reader is virtual (no contactless), and a lab profile
    that says it carries no extended APDUs skips the signature check, naming both."""
    (tmp_path / "air.pin.yaml").write_text(
        "name: over the air\nrule: r\nrequires: [contactless]\nsteps:\n  - power: cycle\n"
    )
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "in-process.yaml").write_text(
        "name: in-process\nmatch: '^emulated \\(in-process\\)$'\ninterface: virtual\n"
        "extended_apdu: false\n"
    )
    files = [str(tmp_path / "air.pin.yaml"), str(LIB / "signing-auth-key.pin.yaml")]
    plain = run_pytest("-rs", *files, timeout=300)
    assert "1 passed, 1 skipped" in plain.stdout, plain.stdout[-2000:]
    assert (
        "needs contactless (requires:; a contactless reader says interface: contactless in its "
        "profile), which emulated (in-process) does not have" in plain.stdout
    )
    short = run_pytest("-rs", *files, "--pinloop-readers", str(lab), timeout=300)
    assert "2 skipped" in short.stdout, short.stdout[-2000:]
    assert "needs extended-apdu (sign with expect signature: valid, line 17" in short.stdout


# -- what is refused while a scenario runs ------------------------------------------------------
@pytest.mark.parametrize(
    ("capability", "name", "words"),
    [
        (C.TEST_REINIT, "reinit-window.pin.yaml", "test mechanism"),
        (C.FRESH_PINS, "change-pin.pin.yaml", "fresh PIN on a real card"),
        (C.WRITE_POINTS, "tearing-verify.pin.yaml", "write point"),
    ],
)
def test_run_time_refusals_follow_the_capability(
    capability: Capability, name: str, words: str
) -> None:
    """The Runner itself (no plugin, no tags asked): a target without the capability refuses
    the step with its name; the same target with it runs the scenario."""
    with pytest.raises(UnsafeStep, match=rf"{words}.*needs {capability}"):
        Runner(_without(capability), _lib(name), destructive_ok=True).run()
    Runner(_without(), _lib(name), destructive_ok=True).run()


def test_literal_values_are_refused_without_literal_pins(tmp_path: Path) -> None:
    literal = _file(
        tmp_path,
        "name: n\nrule: r\ntags: [emulator-only]\nsteps:\n  - select: {pin: jpki-auth}\n"
        "  - verify: {value: {literal: '1234'}}\n    expect: {sw: ok}\n",
    )
    with pytest.raises(UnsafeStep, match=r"literal PIN values.*needs literal-pins"):
        Runner(_without(C.LITERAL_PINS), literal).run()
    Runner(_without(), literal).run()


def test_the_verified_state_is_checked_only_where_observable(tmp_path: Path) -> None:
    wrong = _file(
        tmp_path,
        "name: n\nrule: verified-wrong\nsteps:\n  - select: {pin: jpki-auth}\n"
        "  - verify: {value: right}\n    expect: {sw: ok, verified: false}\n",
    )
    from harness.run.expect import ExpectationFailed

    with pytest.raises(ExpectationFailed, match="jpki-auth verified"):
        Runner(_without(), wrong).run()
    runner = Runner(_without(C.OBSERVE_VERIFIED), wrong)
    runner.run()
    assert any("not observable" in line for line in runner.session.trace)


def test_a_bare_target_has_nothing() -> None:
    class Bare(Target):
        name = "bare"

    bare = Bare()
    assert bare.capabilities == frozenset() and not bare.emulated
    with pytest.raises(UnsafeStep, match="needs test-reinit, which bare does not have"):
        bare.reset_code("window")
    with pytest.raises(UnsafeStep, match="needs write-points"), bare.write_points(print):
        pass


# -- what every target must meet, whoever wrote it --------------------------------------------
def test_a_target_that_claims_more_than_it_is_is_refused_before_anything_is_sent(
    template_state: object,
) -> None:
    """Found by review: nothing checked what a lab's target kind declares, so a target with a
    real card could claim block-pins (no opt-in) or skip the guard entirely."""
    from harness.emulator import EmulatedCard, MemoryStore
    from harness.secret import Secret
    from harness.targets import GuardedCard, make_target
    from harness.transport.inprocess import InProcessTransport

    card = EmulatedCard(MemoryStore(template_state.copy()))  # type: ignore[attr-defined]

    class Lab(Target):
        name = "lab reader"
        card_profile = JPKI

        def __init__(self) -> None:
            self.transport = InProcessTransport(card, name=self.name)

        def secret(self, pin_id: str) -> Secret:
            return Secret(b"1234")

        def max_tries(self, pin_id: str) -> int:
            return 3

    class ClaimsEmulator(Lab):
        declared = EMULATED

    class ClaimsBlockPins(Lab):
        declared = frozenset({Capability.BLOCK_PINS, Capability.LITERAL_PINS})

    [scenario] = load_scenarios(ROOT / "scenarios" / "correct-restores-max.pin.yaml", JPKI)[:1]
    for cls, words in [
        (ClaimsEmulator, "claims emulator but is not one of pinloop's emulated targets"),
        (ClaimsBlockPins, "reader's capabilities only, not literal-pins, block-pins"),
        (Lab, "transport is not one"),  # reader capabilities, but no guard
    ]:
        with pytest.raises(safety.UnsafeTarget, match=words):
            Runner(cls(), scenario, destructive_ok=True).run()
    assert card.apdus == 0  # refused before the first APDU
    with pytest.raises(safety.UnsafeTarget, match="claims emulator"):
        safety.check_target(ClaimsEmulator(), connected=False)

    # through the registry: make_target refuses (and closes) what a lab's kind builds
    from harness.targets import TARGETS, TargetKind

    TARGETS.register("claims", TargetKind(lambda arg, setup: ClaimsBlockPins(), "claims", "x"))
    try:
        with pytest.raises(safety.UnsafeTarget, match="block-pins"):
            make_target("claims", None, None, card=JPKI)
    finally:
        TARGETS.unregister("claims")

    # the guard mixed in after an emulated base still leaves only the reader's capabilities
    class Mixed(InProcessTarget, GuardedCard):
        pass

    mixed = object.__new__(Mixed)
    mixed.profile = None
    assert mixed.capabilities == frozenset() and not mixed.emulated
