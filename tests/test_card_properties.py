"""Property: random APDU sequences never break the card.

For any sequence of commands - well-formed ones built from the card's own command set with
right and wrong PINs, and raw random bytes - the card never raises, always answers a status
word from its table, never answers 9000 to a VERIFY whose data is not the PIN, and never
breaks a counter rule:

- a counter moves only for the PIN object the command addressed;
- it goes down by exactly one, and only on a VERIFY with data answered 63 Cx (x = new value);
- it goes up only to the maximum, and only on 9000 to VERIFY, CHANGE or RESET RETRY COUNTER;
- the status query answers 63 Cx with x = the counter, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from harness.apdu import commands as C
from harness.apdu.model import CommandAPDU
from harness.cards.jpki.layout import APPLICATIONS, APPS_BY_ID, PINS
from harness.emulator import FAITHFUL, PROFILES, CardState, DefectProfile, EmulatedCard, MemoryStore
from tests.oracle import check_apdu, check_power

_AIDS = [a.aid for a in APPLICATIONS]


def _actions(template: CardState) -> st.SearchStrategy[list[object]]:
    secrets = sorted({p.value for p in template.pins.values()})
    codes = sorted(template.reset_codes.values())
    pin_values = st.one_of(
        st.sampled_from(secrets),
        st.binary(min_size=1, max_size=18),
        st.text("0123456789", min_size=4, max_size=4).map(str.encode),
        st.text("ABCXYZ019az", min_size=6, max_size=16).map(str.encode),
    )
    reset_data = st.tuples(
        st.sampled_from([*codes, b"X" * len(codes[0])]), st.one_of(st.just(b""), pin_values)
    ).map(lambda t: t[0] + t[1])
    fids = st.integers(0, 0x20)
    sfis = st.one_of(st.none(), st.integers(1, 30))
    structured = st.one_of(
        st.builds(
            lambda aid, n: C.select_df(aid[: max(1, n)]), st.sampled_from(_AIDS), st.integers(1, 10)
        ),
        st.builds(C.select_ef, fids),
        st.builds(lambda v, s: C.verify(v, sfi=s), pin_values, sfis),
        st.builds(lambda s: C.pin_status(sfi=s), sfis),
        st.builds(C.change_reference_data, pin_values),
        st.builds(C.change_key, pin_values),
        st.builds(
            lambda d, p1: CommandAPDU(0x00, 0x2C, p1, 0x80, d),
            reset_data,
            st.sampled_from([0, 1, 2]),
        ),
        st.builds(
            lambda o, le, e: C.read_binary(o, le, extended=e),
            st.integers(0, 0x7FFF),
            st.integers(1, 65536),
            st.booleans(),
        ),
        st.builds(
            lambda s, o, le: C.read_binary(o, le, sfi=s),
            st.integers(1, 30),
            st.integers(0, 255),
            st.integers(1, 256),
        ),
        st.builds(lambda r, s: C.read_record(r, sfi=s), st.integers(0, 255), st.integers(0, 30)),
        st.builds(
            lambda d: CommandAPDU(0x80, 0x2A, 0x00, 0x80, d, le=256),
            st.binary(min_size=1, max_size=260),
        ),
        st.builds(C.get_challenge, st.integers(1, 256)),
        st.builds(
            CommandAPDU,
            st.sampled_from([0x00, 0x80, 0x01, 0x0C, 0x10, 0xA0]),
            st.sampled_from([0x20, 0x24, 0x2C, 0x32, 0x2A, 0xA4, 0xB0, 0xCA]),
            st.integers(0, 255),
            st.integers(0, 255),
            st.binary(max_size=20),
            st.one_of(st.none(), st.integers(1, 256)),
        ),
    )
    # a realistic walk: go to a PIN object (SELECT DF, SELECT EF), then work on it
    goto_pin = st.sampled_from(PINS).map(
        lambda p: [C.select_df(APPS_BY_ID[p.app].aid).to_bytes(), C.select_ef(p.fid).to_bytes()]
    )
    pin_command = st.one_of(
        st.builds(C.verify, pin_values),
        st.builds(C.verify, st.sampled_from(secrets)),
        st.builds(C.pin_status),
        st.builds(C.change_reference_data, pin_values),
        st.builds(C.change_key, pin_values),
        st.builds(lambda d: CommandAPDU(0x00, 0x2C, 0x00, 0x80, d), reset_data),
    ).map(lambda c: [c.to_bytes()])
    # ten wrong tries of one length: enough to block any PIN object it lands on
    hammer = st.sampled_from([4, 6, 12, 14]).map(lambda n: [C.verify(b"0" * n).to_bytes()] * 10)
    raw = st.binary(min_size=0, max_size=300)
    return st.one_of(
        hammer,
        goto_pin,
        goto_pin,
        pin_command,
        pin_command,
        pin_command,
        structured.map(lambda c: [c.to_bytes()]),
        raw.map(lambda r: [r]),
        st.sampled_from(["power-cycle", "reset"]).map(lambda a: [a]),
    )


def _walks(template: CardState) -> st.SearchStrategy[list[object]]:
    """Sequences of actions; each begins at a PIN object so that PIN commands bite."""
    actions = _actions(template)
    start = st.sampled_from(PINS).map(
        lambda p: [C.select_df(APPS_BY_ID[p.app].aid).to_bytes(), C.select_ef(p.fid).to_bytes()]
    )
    return st.tuples(start, st.lists(actions, min_size=5, max_size=80)).map(
        lambda t: [*t[0], *(a for group in t[1] for a in group)]
    )


def _property(
    template: CardState,
    defects: DefectProfile = FAITHFUL,
    accept_any_pin: bool = False,
    must_fail: bool = False,
) -> Callable[[], None]:
    # a run that must fail only has to find one counterexample: no shrinking, no database
    quick = (
        settings(database=None, phases=[Phase.generate], max_examples=3000)
        if must_fail
        else settings()
    )

    @quick
    @given(_walks(template))
    def run(actions: list[object]) -> None:
        card = EmulatedCard(MemoryStore(template.copy()), defects=defects)
        if accept_any_pin:
            card._matches = lambda secret, presented: True  # type: ignore[method-assign]
        card.power_on()
        for action in actions:
            if action in ("power-cycle", "reset"):
                check_power(card, action == "power-cycle")
                continue
            assert isinstance(action, bytes)
            check_apdu(card, action)

    return run


def test_random_apdu_sequences(template_state: CardState) -> None:
    _property(template_state)()


@pytest.mark.parametrize(
    "profile", ["no-decrement", "ok-when-blocked", "query-costs-try", "power-cycle-resets-counter"]
)
def test_the_property_catches_counter_defects(template_state: CardState, profile: str) -> None:
    with pytest.raises(AssertionError):
        _property(template_state, PROFILES[profile], must_fail=True)()


def test_the_property_catches_a_card_that_accepts_any_pin(template_state: CardState) -> None:
    with pytest.raises(AssertionError, match="without the secret"):
        _property(template_state, accept_any_pin=True, must_fail=True)()
