"""Card facts and their provenance: on a card that is not the emulator a check that rests on a
fact nobody has established is observed and reported, never a device defect; on the emulator
every fact stays a checked expectation; a lab's card profile declares its card.

The PC/SC tests serve the emulated card in a process of its own behind vpcd and address it as
a real reader (``reader:^Virtual PCD 00 00$``, PINs from the environment): a card that pinloop
treats exactly as a citizen's card, and that differs from the emulator's model only in a fact
that no public source establishes.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.cards import card_profile
from harness.cards.facts import Confidence
from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config, parse_profile, personalise
from harness.emulator.config import DEFAULT_CONFIG_PATH, CardConfig
from harness.errors import ConfigError, DeviceDefect
from harness.lab.pcscd import Pcscd
from harness.run.runner import Runner
from harness.scenario import load_scenarios
from harness.targets import InProcessTarget, Target, env_name
from tests.emulator_process import EmulatorProcess
from tests.pcsc_lab import pcscd  # noqa: F401 - the fixture
from tests.support import PretendRealCard, run_pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "scenarios"
CODES = ("kenhojo-a", "kenhojo-b", "kenkaku-a", "kenkaku-b", "kenkaku-birth")


def _config(tmp_path: Path, tries: int) -> Path:
    """The default card config with the card-face numbers' maximum set to ``tries``."""
    text = DEFAULT_CONFIG_PATH.read_text("utf-8")
    assert "verification-code: 10" in text
    path = tmp_path / f"card-{tries}.yaml"
    path.write_text(text.replace("verification-code: 10", f"verification-code: {tries}"), "utf-8")
    return path


def _scenario(name: str, pin: str):  # type: ignore[no-untyped-def]
    return next(s for s in load_scenarios(LIB / name, JPKI) if s.params.get("pin", pin) == pin)


class ObservingCard(PretendRealCard):
    """The in-process card behind the guard, taking the maxima as a real reader does: what
    the profile establishes, else what the guard saw (never the emulator's own figure)."""

    max_tries = Target.max_tries


# -- the profile ---------------------------------------------------------------------------------
def test_every_fact_has_its_confidence_and_source() -> None:
    for fact in JPKI.all_facts:
        assert fact.source and fact.statement, fact.id
    assert {f.id for f in JPKI.all_facts if not f.established} >= {
        "wrong-length-free",
        "lowercase-costs-a-try",
        "blocked-query-63c0",
        *(f"max-tries.{p}" for p in CODES),
    }
    for pin in CODES:  # no figure at all: the emulator's comes from its card config
        assert JPKI.pins_by_id[pin].max_tries is None
    assert set(JPKI.guard_facts.max_tries) == {p.id for p in JPKI.pins} - set(CODES)


def test_steps_rest_on_the_facts_of_what_they_do() -> None:
    malformed = _scenario("malformed-length-free.pin.yaml", "jpki-auth")
    assert [s.facts for s in malformed.steps] == [
        (),
        ("wrong-length-free",),
        ("wrong-length-free",),
        ("wrong-length-free", "verify-by-sfi"),
    ]
    signing = _scenario("signing-auth-key.pin.yaml", "")
    assert signing.steps[1].facts == ("signing-needs-verify",)  # rests_on: in the file
    lower = _scenario("lowercase-sign-password.pin.yaml", "")
    assert lower.steps[1].facts == ("lowercase-costs-a-try",)


def test_an_unknown_fact_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "x.pin.yaml"
    path.write_text(
        "name: x\nrule: x\nsteps:\n  - select: {pin: jpki-auth}\n"
        "  - status: {}\n    rests_on: [no-such-fact]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_scenarios(path, JPKI)
    assert err.value.location is not None and err.value.location.line == 6, err.value.render()


# -- in the process: the emulator checks, the guarded card observes --------------------------------
def test_a_card_config_with_another_maximum_passes_the_library_in_process(tmp_path: Path) -> None:
    """The emulated card with 3 tries for the card-face numbers: every check holds (the
    maximum is the card config's, `repeat: max` resolved when the step runs)."""
    proc = run_pytest(str(LIB), "--pinloop-card", str(_config(tmp_path, 3)), timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert " failed" not in out.splitlines()[-1] and " error" not in out.splitlines()[-1]


def test_an_unproven_maximum_is_observed_and_used(tmp_path: Path) -> None:
    config = load_card_config(_config(tmp_path, 3))
    card = ObservingCard(config, parse_profile("faithful"))
    runner = Runner(card, _scenario("status-query-is-free.pin.yaml", "kenhojo-a"))
    runner.run()
    record = runner.session.record
    assert record.outcome == "passed"
    assert [(o.fact, o.kind) for o in record.observations] == [
        ("max-tries.kenhojo-a", "value"),
        ("status-query-by-sfi", "as-modelled"),
    ]
    assert "max 3 observed" in record.observations[0].observed
    assert record.steps[1].tries["kenhojo-a"] == {"after": 3}  # tries: max is the card's 3


def test_a_card_that_differs_in_an_unknown_fact_is_observed_not_failed() -> None:
    """A VERIFY of the wrong length costs a try on this card: in the process a defect of
    the emulator; behind the guard an observation, the scenario ends, the tries are back."""
    scenario = _scenario("malformed-length-free.pin.yaml", "kenhojo-a")
    emulated = Runner(
        InProcessTarget(load_card_config(), parse_profile("wrong-length-costs-try")), scenario
    )
    with pytest.raises(DeviceDefect, match="malformed-length-costs-nothing"):
        emulated.run()
    card = ObservingCard(load_card_config(), parse_profile("wrong-length-costs-try"))
    runner = Runner(card, scenario, destructive_ok=True)
    runner.run()
    record = runner.session.record
    assert record.outcome == "passed"
    assert [s.verdict for s in record.steps] == ["passed", "observed", "not run", "not run"]
    (seen,) = [o for o in record.observations if o.kind == "differs"]
    assert seen.fact == "wrong-length-free" and seen.step == 2 and "63C9" in seen.observed
    assert card.card.pin_state("kenhojo-a").remaining == 10  # the guard put it back


def test_the_established_part_of_a_fact_stays_a_defect() -> None:
    """signing-needs-verify is unknown for its status word, but its floor (refused) is not:
    a card that signs without the PIN fails on any card."""
    scenario = _scenario("signing-auth-key.pin.yaml", "")
    card = ObservingCard(load_card_config(), parse_profile("faithful"))
    runner = Runner(card, scenario)
    runner.run()  # 69 82 as modelled: observed as such
    assert ("signing-needs-verify", "as-modelled") in {
        (o.fact, o.kind) for o in runner.session.record.observations
    }

    class Signs(ObservingCard):  # signs whatever was verified: answers 90 00
        def __init__(self) -> None:
            super().__init__(load_card_config(), parse_profile("faithful"))
            inner = self.card.transmit

            def transmit(raw: bytes) -> bytes:
                if raw[:2] == b"\x80\x2a":
                    return bytes(256) + b"\x90\x00"
                return inner(raw)

            self.card.transmit = transmit  # type: ignore[method-assign]

    with pytest.raises(DeviceDefect, match=r"refused .* established"):
        Runner(Signs(), scenario).run()


def test_a_try_spent_only_to_observe_needs_the_opt_in() -> None:
    from harness.safety import skip_reason

    card = ObservingCard(load_card_config(), parse_profile("faithful"))
    why = skip_reason(_scenario("malformed-length-free.pin.yaml", "jpki-auth"), card)
    assert why is not None and "spends a try to observe wrong-length-free (unknown)" in why
    assert "--pinloop-destructive-reader" in why
    assert skip_reason(_scenario("status-query-is-free.pin.yaml", "jpki-auth"), card) is None


# -- the lab's card profile ----------------------------------------------------------------------
def _lab_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.card.yaml"
    path.write_text(text, "utf-8")
    return path


def test_a_lab_card_profile_declares_absent_unknown_and_promoted(tmp_path: Path) -> None:
    path = _lab_file(
        tmp_path,
        "name: card-7\nbase: jpki\nabsent: [kenkaku-birth]\nunknown: [juki-pin]\n"
        "facts:\n  max-tries.kenhojo-a: {value: 3, source: read on card 7}\n"
        "  wrong-length-free: {source: observed on card 7}\n",
    )
    card = card_profile(str(path))
    assert card.name == "jpki" and card.variant == "card-7"
    assert card.absent == {"kenkaku-birth"} and card.unknown_pins == {"juki-pin"}
    assert card.pins_by_id["kenhojo-a"].established_max == 3
    assert card.facts_by_id["wrong-length-free"].confidence is Confidence.LAB
    assert card.guard_facts.max_tries["kenhojo-a"] == 3
    assert "kenkaku-birth" not in {p.id for p in card.present_pins}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("name: c\nbase: jpki\nfacts:\n  no-such: {source: abc}\n", 4, "unknown fact"),
        ("name: c\nbase: jpki\nfacts:\n  max-tries.kenhojo-a: {source: abc}\n", 4, "value"),
        ("name: c\nbase: jpki\nabsent: [jpki-auth, nope]\n", 3, "no PIN object"),
        ("name: c\nbase: nope\n", 2, "unknown card profile"),
        (
            "name: c\nbase: jpki\nfacts:\n  wrong-length-free: {value: 3, source: abc}\n",
            4,
            "no value",
        ),
    ],
)
def test_a_mistake_in_a_lab_card_profile_is_an_error_at_its_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    with pytest.raises(ConfigError, match=words) as err:
        card_profile(str(_lab_file(tmp_path, text)))
    assert err.value.location is not None and err.value.location.line == line, err.value.render()


# -- through pcscd, as a real reader ---------------------------------------------------------------
def _outcomes(junit: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        verdict = "passed"
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                verdict = f"{tag}: {el.get('message', '')}"
        out[case.get("name", "")] = verdict
    return out


def _served(
    pcscd: Pcscd,  # noqa: F811 - the fixture
    config: CardConfig,
    tmp: Path,
    *args: str,
    defect: str | None = None,
) -> tuple[dict[str, str], dict[str, object], str, dict[str, int]]:
    from harness.emulator import FileStore
    from harness.transport.pcsc import wait_for_card

    slot = pcscd.slots[0]
    emu = EmulatorProcess(personalise(config), tmp, slot.url, defect=defect)
    junit, reports = tmp / "junit.xml", tmp / "reports"
    try:
        wait_for_card(slot.reader, 15)
        proc = run_pytest(
            "-p",
            "no:randomly",
            "--pinloop-target",
            f"reader:^{slot.reader}$",
            f"--junitxml={junit}",
            "--pinloop-reports",
            str(reports),
            *args,
            env={env_name(p, JPKI): v for p, v in config.secrets().items()},
            timeout=600,
        )
    finally:
        emu.stop()
    store = FileStore.open(emu.state_path)
    try:
        left = {k: p.remaining for k, p in store.state.pins.items()}
    finally:
        store.close()
    summary = json.loads((reports / "summary.json").read_text("utf-8"))
    (reader,) = summary["readers"].values()
    return _outcomes(junit), reader, proc.stdout + proc.stderr, left


def test_a_card_with_another_unproven_maximum_has_no_defect_as_a_real_reader(
    pcscd: Pcscd,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """Acceptance: the card differs from the emulator only in the card-face numbers' maximum
    (3, not 10). Served as a real reader, the library gives no device defect and no lab
    fault, and the summary lists the maxima the card showed."""
    config = load_card_config(_config(tmp_path, 3))
    got, reader, out, left = _served(pcscd, config, tmp_path, str(LIB))
    assert not [k for k, v in got.items() if v.startswith(("failure", "error"))], out[-4000:]
    passed = {k.split("@")[0] for k, v in got.items() if v == "passed"}
    for pin in CODES:  # repeat: max and tries: max with the 3 the card showed
        assert any("free status query" in k and f"[pin={pin}]" in k for k in passed), [
            (k, v) for k, v in got.items() if f"[pin={pin}]" in k
        ]
    assert len(passed) >= 15, got
    assert reader["outcomes"]["failed"] == 0 and reader["outcomes"]["error"] == 0  # type: ignore[index]
    values = {
        o["fact"]: o["observed"]
        for o in reader["card_facts_observed"]  # type: ignore[attr-defined]
        if o["kind"] == "value"
    }
    for pin in CODES:
        assert (
            f"{pin}: the status query after a right VERIFY answered 63C3: max 3 observed"
            == (values[f"max-tries.{pin}"])
        )
    spent = [v for k, v in got.items() if k.startswith("a VERIFY of the wrong length")]
    assert spent and all("spends a try to observe wrong-length-free" in v for v in spent)
    assert "card facts observed on Virtual PCD 00 00" in out
    assert all(left[p] == (3 if p in CODES else JPKI.pins_by_id[p].max_tries) for p in left)


def test_a_lab_card_profile_promotes_skips_and_checks_through_pcscd(
    pcscd: Pcscd,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """The lab says 照合番号A of its card has 10 tries (the card has 3: a device defect, as
    for any established fact) and that its card has no birth-date key (skipped, named)."""
    config = load_card_config(_config(tmp_path, 3))
    lab = _lab_file(
        tmp_path,
        "name: card-7\nbase: jpki\nabsent: [kenkaku-birth]\n"
        "facts:\n  max-tries.kenhojo-a: {value: 10, source: a wrong note}\n",
    )
    got, _, out, _ = _served(
        pcscd,
        config,
        tmp_path,
        str(LIB / "status-query-is-free.pin.yaml"),
        "--pinloop-card-profile",
        str(lab),
    )
    by_pin = {k.split("[pin=")[1].split("]")[0]: v for k, v in got.items()}
    assert by_pin["kenhojo-a"].startswith("failure"), by_pin
    # the guard relies on the maximum: a card below it stops every further try on the card
    assert "the right PIN did not restore kenhojo-a" in out, (by_pin, out[-3000:])
    assert "(its maximum is 10)" in out
    assert by_pin["kenkaku-birth"].startswith("skipped: kenkaku-birth: not on the card"), by_pin
    assert f"{lab}:1" in by_pin["kenkaku-birth"]
    assert by_pin["jpki-auth"] == "passed"
    assert (
        by_pin["kenhojo-b"].startswith("skipped: refused on") and "stopped" in by_pin["kenhojo-b"]
    )


def test_a_card_that_charges_a_wrong_length_is_observed_through_pcscd(
    pcscd: Pcscd,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """With the opt-in, the wrong-length VERIFY is sent; the card charges a try for it (its
    answer 63 Cx): observed (passed), the counter restored with the right PIN."""
    config = load_card_config()
    reader_name = pcscd.slots[0].reader
    got, reader, out, left = _served(
        pcscd,
        config,
        tmp_path,
        str(LIB / "malformed-length-free.pin.yaml"),
        "-k",
        "jpki-sign or kenhojo-b",
        "--pinloop-destructive-reader",
        reader_name,
        defect="wrong-length-costs-try",
    )
    assert set(got.values()) == {"passed"}, (got, out[-3000:])
    differs = [o for o in reader["card_facts_observed"] if o["kind"] == "differs"]  # type: ignore[attr-defined]
    assert {o["fact"] for o in differs} == {"wrong-length-free"}
    shown = {s for o in differs for s in o["scenarios"]}
    assert {s.rsplit("[pin=", 1)[1] for s in shown} == {"jpki-sign]", "kenhojo-b]"}, shown
    assert left["jpki-sign"] == 5 and left["kenhojo-b"] == 10  # restored by the guard
