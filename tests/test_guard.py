"""The real-card guard against hostile scenarios and misbehaving cards, in the process.

Each file of ``tests/hostile/`` tries a way past the guard that was found on an earlier
version (raw APDUs, SFI forms, value lists, changes, re-initialisation, unknown commands, power
cuts between tries, two scenarios in a row). They run against the emulated card behind the
guard, as a real card would be, without the destructive opt-in; every NVM write of the card
is recorded, so "never below the start level minus what the scenario declared, never blocked,
never left changed" is checked on every write, not only at the end.
The same files run through pcscd against a real-reader target in ``test_guard_pcsc.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import CardConfig, MemoryStore, load_card_config, parse_profile
from harness.errors import HarnessError
from harness.run.runner import Runner
from harness.safety.guard import GuardDefect, Refused
from harness.scenario import Scenario, load_scenarios
from harness.scenario.spend import declared_spend
from tests.support import PretendRealCard

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = Path(__file__).resolve().parent / "hostile"
LIB = ROOT / "scenarios"
MAX = {"jpki-auth": 3, "jpki-sign": 5, "kenhojo-pin": 3, "juki-pin": 3, "common-pin": 3}


class RecordingStore(MemoryStore):
    """NVM in memory that remembers the lowest counter each PIN had after a command.

    After, not during: a correct VERIFY writes the decremented counter before it compares
    (so that a power cut cannot give a try back) and the maximum right after.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.lowest = {k: p.remaining for k, p in self.state.pins.items()}

    def settle(self) -> None:
        for k, p in self.state.pins.items():
            self.lowest[k] = min(self.lowest[k], p.remaining)


@pytest.fixture
def config() -> CardConfig:
    return load_card_config()


def _real(config: CardConfig, defect: str = "faithful") -> tuple[PretendRealCard, RecordingStore]:
    target = PretendRealCard(config, parse_profile(defect))
    store = RecordingStore(target.template.copy())
    target.card.store = store
    target.begin = _keep_store(target, store)  # type: ignore[method-assign]
    transmit = target.card.transmit

    def recorded(raw: bytes) -> bytes:
        try:
            return transmit(raw)
        finally:
            store.settle()

    target.card.transmit = recorded  # type: ignore[method-assign]
    return target, store


def _keep_store(target: PretendRealCard, store: RecordingStore):  # type: ignore[no-untyped-def]
    """A real card is not swapped for a fresh one between scenarios: keep its NVM."""
    begin = PretendRealCard.begin

    def keep(*args: object, **kwargs: object) -> None:
        target.card.store = store
        begin(target, *args, **kwargs)  # type: ignore[arg-type]

    return keep


def _run(target: PretendRealCard, scenario: Scenario) -> str:
    try:
        Runner(target, scenario).run()
    except Refused as exc:
        return "refused: " + str(exc)
    except GuardDefect as exc:
        return "defect: " + str(exc)
    except AssertionError as exc:
        return "failed: " + str(exc)
    except HarnessError as exc:
        return "error: " + str(exc)
    return "passed"


def _scenarios(name: str) -> list[Scenario]:
    return load_scenarios(HOSTILE / name if (HOSTILE / name).exists() else LIB / name, JPKI)


# file → outcome per PIN of its scenarios (the PIN of for_each, or the file's one PIN)
HOSTILE_CASES: dict[str, dict[str, str]] = {
    "raw-verify.hostile.yaml": {"": "refused: 00 20 00 80: a possibly wrong VERIFY of jpki-auth"},
    "raw-verify-sfi.hostile.yaml": {"": "refused: 00 20 00 98: a possibly wrong VERIFY of jpki"},
    "raw-select-then-verify.hostile.yaml": {"": "refused: 00 20 00 80: a possibly wrong VERIFY"},
    "raw-reset.hostile.yaml": {"": "refused: re-initialisation (RESET RETRY COUNTER) of jpki"},
    "raw-change.hostile.yaml": {"": "refused: a PIN change of jpki-auth"},
    "raw-unknown.hostile.yaml": {"": "refused: 00 88 00 80: pinloop does not know"},
    "raw-unknown-sm.hostile.yaml": {"": "refused: 0C 20 00 80: pinloop does not know"},
    "value-list.hostile.yaml": {
        "jpki-auth": "refused: the scenario may spend 3 tries of jpki-auth, which has 3",
        "jpki-sign": "passed",
    },
    "value-list-sfi.hostile.yaml": {
        "kenhojo-pin": "refused: the scenario may spend 3 tries of kenhojo-pin, which has 3",
        "jpki-sign": "passed",
    },
    "change.hostile.yaml": {"": "refused: a PIN change of jpki-auth"},
    "wrong-twice-a.hostile.yaml": {"": "passed"},
    "wrong-twice-b.hostile.yaml": {"": "passed"},
    "power-cuts.hostile.yaml": {"": "passed"},
    "more-than-declared.hostile.yaml": {
        "": "refused: 00 20 00 80: a possibly wrong VERIFY of jpki-sign would leave 3 tries"
    },
    "two-at-one.hostile.yaml": {
        "": "refused: the scenario may spend 2 tries of jpki-auth, which has 3 on "
    },
    "verify-with-le.hostile.yaml": {"": "refused: 00 20 00 80: pinloop does not know"},
    "aid-prefix.hostile.yaml": {"": "refused: 00 20 00 80: the PIN object it addresses"},
}


def _lowest_allowed(scenario: Scenario, pin: str, start: int) -> int:
    return max(2, start - declared_spend(scenario).get(pin, 0))


def test_every_hostile_file_is_refused_or_stays_within_what_it_declares(
    config: CardConfig,
) -> None:
    """All files in a row on one card, as in one session: the guard's memory carries over."""
    target, store = _real(config)
    assert sorted(HOSTILE_CASES) == sorted(p.name for p in HOSTILE.glob("*.hostile.yaml"))
    for name, outcomes in HOSTILE_CASES.items():
        for scenario in _scenarios(name):
            pin = scenario.params.get("pin", "")
            before = dict(store.lowest)
            store.lowest = {k: p.remaining for k, p in store.state.pins.items()}
            got = _run(target, scenario)
            assert got.startswith(outcomes[pin]), (name, pin, got)
            for p, low in store.lowest.items():
                start = MAX.get(p, 10)
                assert low >= _lowest_allowed(scenario, p, start), (name, p, low)
            store.lowest = {k: min(v, before[k]) for k, v in store.lowest.items()}
            # after each scenario: every counter back at its maximum, every value the lab's
            for p, state in store.state.pins.items():
                assert state.remaining == state.max_tries, (name, p, state.remaining)
                if p in MAX:
                    assert state.value == config.secrets()[p].encode(), (name, p)
    assert target.guard.stopped is None
    assert min(store.lowest.values()) >= 2  # one try always in reserve, never blocked


def test_the_same_files_with_the_opt_in_run_and_the_card_is_put_back(config: CardConfig) -> None:
    """With the destructive opt-in the raw APDUs go out; a change is changed back and verified
    at the end, counters restored; only RESET RETRY COUNTER leaves a PIN unknown."""
    target, store = _real(config)
    Runner(target, _scenarios("raw-verify.hostile.yaml")[0], destructive_ok=True).run()
    assert store.state.pins["jpki-auth"].remaining == 0  # three raw wrong tries: blocked
    target, store = _real(config)
    for name in ("raw-change.hostile.yaml", "change.hostile.yaml"):
        runner = Runner(target, _scenarios(name)[0], destructive_ok=True)
        runner.run()
        assert any("changed back to the lab's PIN and verified" in t for t in runner.session.trace)
        assert store.state.pins["jpki-auth"].value == b"1234"
        assert store.state.pins["jpki-auth"].remaining == 3
    target, store = _real(config)
    Runner(target, _scenarios("raw-reset.hostile.yaml")[0], destructive_ok=True).run()
    assert store.state.pins["jpki-sign"].value == b"NEWPWD"
    later = _run(target, _scenarios("value-list.hostile.yaml")[1])  # jpki-sign
    assert later.startswith("refused: jpki-sign on ") and "RESET RETRY COUNTER" in later


@pytest.mark.parametrize(
    ("defect", "file", "pin", "message", "lowest", "final"),
    [
        # the library's own untagged scenarios on a card whose right PIN does not restore
        ("no-restore", "verify-latency.pin.yaml", "jpki-auth", "did not restore jpki-auth", 2, 2),
        ("no-restore", "verify-timing-leak.pin.yaml", "jpki-auth", "did not restore", 2, 2),
        # a card whose status query costs a try: found at the start, the tries given back
        ("query-costs-try", "status-query-is-free.pin.yaml", "jpki-auth", "costs a try", 1, 3),
        ("query-costs-try", "wrong-twice-a.hostile.yaml", "jpki-sign", "costs a try", 3, 5),
        # one wrong VERIFY that costs two tries (a reader delivering it twice): the reserve
        # try keeps the PIN from blocking, and the tries are given back
        ("double-decrement", "wrong-twice-a.hostile.yaml", "jpki-sign", "cost 2 tries", 3, 5),
        ("double-decrement", "verify-latency.pin.yaml", "jpki-auth", "cost 2 tries", 1, 3),
    ],
)
def test_a_misbehaving_card_is_a_defect_and_its_tries_stop(
    config: CardConfig, defect: str, file: str, pin: str, message: str, lowest: int, final: int
) -> None:
    target, store = _real(config, defect)
    scenario = next(s for s in _scenarios(file) if s.params.get("pin", pin) == pin)
    got = _run(target, scenario)
    assert got.startswith("defect: ") and message in got, got
    assert "no further try to this card" in got
    assert store.lowest[pin] == lowest  # never blocked
    assert all(low >= 1 for low in store.lowest.values())
    assert store.state.pins[pin].remaining == final
    # every later scenario on that card is refused before it sends a try
    writes = dict(store.lowest)
    later = _run(target, _scenarios("raw-verify.hostile.yaml")[0])
    assert later.startswith("refused: ") and "tries on this card were stopped" in later
    assert store.lowest == writes


def test_with_the_opt_in_a_restore_that_fails_still_stops_the_card(config: CardConfig) -> None:
    """correct-restores-max goes down to 1 try: on a real card it needs the opt-in; a card
    whose right PIN does not restore is then a defect, and gets no further try."""
    target, store = _real(config, "no-restore")
    scenario = _scenarios("correct-restores-max.pin.yaml")[0]
    assert scenario.params["pin"] == "jpki-auth"
    assert _run(target, scenario).startswith("refused: the scenario may spend 2 tries")
    try:
        Runner(target, scenario, destructive_ok=True).run()
    except GuardDefect as exc:
        assert "did not restore jpki-auth" in str(exc)
    else:
        raise AssertionError("a restore that fails must stop the card")
    assert store.lowest["jpki-auth"] == 1 and target.guard.stopped


def test_query_costs_try_the_tries_are_given_back(config: CardConfig) -> None:
    target, store = _real(config, "query-costs-try")
    _run(target, _scenarios("status-query-is-free.pin.yaml")[0])
    assert store.state.pins["jpki-auth"].remaining == 3  # healed by the proven PIN


def test_a_wrong_pin_in_the_environment_costs_one_try_only(config: CardConfig) -> None:
    target, store = _real(config)
    target._secrets["jpki-auth"] = type(target._secrets["jpki-auth"])(b"9999")
    for _ in range(3):
        got = _run(target, _scenarios("raw-verify.hostile.yaml")[0])
        assert got.startswith("error: the PIN given for jpki-auth"), got
    assert store.state.pins["jpki-auth"].remaining == 2  # one try, not one per scenario


def test_a_blocked_or_nearly_blocked_pin_is_a_lab_fault_before_anything(
    config: CardConfig,
) -> None:
    target, store = _real(config)
    store.state.pins["jpki-auth"].remaining = 1
    got = _run(target, _scenarios("raw-verify.hostile.yaml")[0])
    assert got.startswith("error: jpki-auth has 1 try left"), got
    store.state.pins["jpki-auth"].remaining = 0
    got = _run(target, _scenarios("raw-verify.hostile.yaml")[0])
    assert got.startswith("error: jpki-auth is blocked"), got


def test_the_guards_memory_survives_a_fresh_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a lab fault the pool sets a real reader up again; a card the guard stopped stays
    stopped (a new guard would have forgotten it and sent tries again)."""
    from harness.cards.jpki import FACTS
    from harness.plugin import pool as P
    from harness.safety.guard import RealCardGuard
    from harness.secret import Secret

    class Inner:
        name = "Reader X"
        last_wire_ns = 0

        def close(self) -> None:
            pass

    class Fake:
        def __init__(self, guard: RealCardGuard) -> None:
            self.guard = guard

        def close(self) -> None:
            pass

    given: list[object] = []

    def make(*args: object, guard: RealCardGuard | None = None, card: object = None) -> Fake:
        given.append(guard)
        return Fake(guard or RealCardGuard(Inner(), FACTS, lambda pin: Secret(b"1234")))  # type: ignore[arg-type]

    class Config:
        def getoption(self, name: str, default: object = None) -> object:
            return {"--pinloop-card-profile": "jpki"}.get(name, default)

    monkeypatch.setattr(P, "make_target", make)
    pool = P.TargetPool(Config())  # type: ignore[arg-type]
    first = pool.get("reader:X")
    first.guard.stopped = "the right PIN did not restore jpki-auth"  # type: ignore[attr-defined]
    pool.mark_faulted("reader:X", "card removed")
    second = pool.get("reader:X")
    assert given == [None, first.guard]  # type: ignore[attr-defined]
    assert second.guard.stopped == "the right PIN did not restore jpki-auth"  # type: ignore[attr-defined]


def test_a_pin_blocked_with_the_opt_in_does_not_stop_other_scenarios(config: CardConfig) -> None:
    target, store = _real(config)
    Runner(target, _scenarios("raw-verify.hostile.yaml")[0], destructive_ok=True).run()
    assert store.state.pins["jpki-auth"].remaining == 0
    # a later scenario on another PIN runs; the blocked one is the lab's to restore
    assert _run(target, _scenarios("wrong-twice-a.hostile.yaml")[0]) == "passed"
    assert _run(target, _scenarios("raw-verify.hostile.yaml")[0]).startswith(
        "error: jpki-auth is blocked"
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"status_query_free": False}, "does not promise a free status query"),
        ({"verify_restores": False}, "promise a VERIFY that restores the counter"),
    ],
)
def test_a_card_whose_profile_lacks_what_the_guard_stands_on_is_not_guarded(
    change: dict[str, bool], words: str
) -> None:
    """The guard counts on two facts of the card profile; without either it sends nothing."""
    import dataclasses

    from harness.cards.jpki import FACTS
    from harness.safety.guard import GuardSetupError, RealCardGuard
    from harness.secret import Secret

    class Inner:
        name = "Reader X"

    with pytest.raises(GuardSetupError, match=words):
        facts = dataclasses.replace(FACTS, **change)  # type: ignore[arg-type]
        RealCardGuard(Inner(), facts, lambda pin: Secret(b"1"))  # type: ignore[arg-type]
    RealCardGuard(Inner(), FACTS, lambda pin: Secret(b"1"))  # type: ignore[arg-type]
