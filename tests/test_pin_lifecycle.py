"""Every PIN object's lifecycle: wrong ×N → lock → re-initialise → change; independence."""

from __future__ import annotations

import pytest

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU
from harness.cards.jpki.layout import PINS, PINS_BY_ID, ChangeCommand
from tests.support import Host

ALL_PINS = [p.id for p in PINS]


def _new_value(pin_id: str) -> bytes:
    return b"CHANGED42" if pin_id == "jpki-sign" else b"4321"


def _counters(host: Host) -> dict[str, int]:
    return {k: host.card.pin_state(k).remaining for k in ALL_PINS}


@pytest.mark.parametrize("pin_id", ALL_PINS)
def test_full_lifecycle(host: Host, pin_id: str) -> None:
    spec = PINS_BY_ID[pin_id]
    window = host.card.store.state.reset_codes["window"]
    max_tries = host.card.pin_state(pin_id).max_tries
    host.select_pin(pin_id)
    assert host.tries() == max_tries

    # wrong × N: each answers 63 Cx with x one less, and the query agrees
    for left in range(max_tries - 1, -1, -1):
        assert host.verify(pin_id, host.wrong(pin_id)) == SW.retries(left)
        assert host.tries() == left
    # locked at exactly N: right and wrong both answer 69 84, nothing moves
    assert host.verify(pin_id) == SW.REFERENCE_DATA_BLOCKED
    assert host.verify(pin_id, host.wrong(pin_id)) == SW.REFERENCE_DATA_BLOCKED
    assert host.tries() == 0 and pin_id not in host.card.verified

    # re-initialise through the window route
    if spec.settable:
        fresh = _new_value(pin_id)
        assert host.sw(C.reset_retry_counter(window, fresh)) == SW.OK
    else:  # card-face numbers can be unblocked but not set
        assert host.sw(C.reset_retry_counter(window, host.secrets[pin_id])) == (
            SW.INCOMPATIBLE_FILE_STRUCTURE
        )
        assert host.sw(C.reset_retry_counter(window)) == SW.OK
        fresh = host.secrets[pin_id]
    assert host.tries() == max_tries
    if spec.settable:
        assert host.verify(pin_id) == SW.retries(max_tries - 1)  # the old value is gone
    assert host.verify(pin_id, fresh) == SW.OK
    assert host.tries() == max_tries  # a correct entry restores the maximum

    # change: old rejected, new accepted
    if spec.change is ChangeCommand.NONE:
        return
    make = C.change_reference_data if spec.change is ChangeCommand.ISO else C.change_key
    changed = b"AGAIN12345" if pin_id == "jpki-sign" else b"2468"
    assert host.sw(make(changed)) == SW.OK
    host.select_pin(pin_id)
    assert host.verify(pin_id, fresh) == SW.retries(max_tries - 1)
    assert host.verify(pin_id, changed) == SW.OK


@pytest.mark.parametrize("pin_id", ALL_PINS)
def test_counters_are_independent(host: Host, pin_id: str) -> None:
    before = _counters(host)
    host.select_pin(pin_id)
    host.verify(pin_id, host.wrong(pin_id))
    after = _counters(host)
    assert after[pin_id] == before[pin_id] - 1
    assert {k: v for k, v in after.items() if k != pin_id} == {
        k: v for k, v in before.items() if k != pin_id
    }
    # blocking one blocks nothing else
    while host.card.pin_state(pin_id).remaining:
        host.verify(pin_id, host.wrong(pin_id))
    others = {k: v for k, v in _counters(host).items() if k != pin_id}
    assert all(v == host.card.pin_state(k).max_tries for k, v in others.items())


def test_the_two_001c_pins_are_separate(host: Host) -> None:
    host.select_pin("juki-pin")
    host.verify("juki-pin", b"0000")
    host.select_pin("common-pin")
    assert host.tries() == 3


def test_a_correct_entry_before_the_lock_restores_the_maximum(host: Host) -> None:
    host.select_pin("jpki-sign")
    for _ in range(4):
        host.verify("jpki-sign", b"WRONG1")
    assert host.tries() == 1
    assert host.verify("jpki-sign") == SW.OK
    assert host.tries() == 5


def test_the_status_query_is_free(host: Host) -> None:
    for spec in PINS:
        host.select_pin(spec.id)
        tries = host.card.pin_state(spec.id).max_tries
        assert [host.tries() for _ in range(tries + 1)] == [tries] * (tries + 1)


# -- the kiosk route: JPKI only, and only with the other JPKI PIN verified --------------------


@pytest.mark.parametrize(
    ("pin_id", "partner"), [("jpki-auth", "jpki-sign"), ("jpki-sign", "jpki-auth")]
)
def test_kiosk_route_needs_the_other_jpki_pin(host: Host, pin_id: str, partner: str) -> None:
    kiosk = host.card.store.state.reset_codes["kiosk"]
    host.select_pin(pin_id)
    while host.card.pin_state(pin_id).remaining:
        host.verify(pin_id, host.wrong(pin_id))
    new = _new_value(pin_id)
    assert host.sw(C.reset_retry_counter(kiosk, new)) == SW.SECURITY_STATUS_NOT_SATISFIED
    host.select_pin(partner)
    assert host.verify(partner) == SW.OK
    assert host.sw(C.select_ef(PINS_BY_ID[pin_id].fid)) == SW.OK
    assert host.sw(C.reset_retry_counter(kiosk, new)) == SW.OK
    assert host.verify(pin_id, new) == SW.OK


def test_kiosk_route_fails_when_both_jpki_pins_are_unknown(host: Host) -> None:
    kiosk = host.card.store.state.reset_codes["kiosk"]
    for pin_id in ("jpki-auth", "jpki-sign"):
        host.select_pin(pin_id)
        while host.card.pin_state(pin_id).remaining:
            host.verify(pin_id, host.wrong(pin_id))
    host.select_pin("jpki-sign")
    assert host.verify("jpki-sign") == SW.REFERENCE_DATA_BLOCKED  # cannot become verified
    for pin_id in ("jpki-auth", "jpki-sign"):
        assert host.sw(C.select_ef(PINS_BY_ID[pin_id].fid)) == SW.OK
        assert host.sw(C.reset_retry_counter(kiosk, _new_value(pin_id))) == (
            SW.SECURITY_STATUS_NOT_SATISFIED
        )
    window = host.card.store.state.reset_codes["window"]
    assert host.sw(C.reset_retry_counter(window, b"PINLOOP2")) == SW.OK  # only the window works


@pytest.mark.parametrize("pin_id", ["kenhojo-pin", "juki-pin", "common-pin", "kenhojo-a"])
def test_kiosk_route_refuses_other_pins(host: Host, pin_id: str) -> None:
    kiosk = host.card.store.state.reset_codes["kiosk"]
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth") == SW.OK
    host.select_pin(pin_id)
    assert host.sw(C.reset_retry_counter(kiosk)) == SW.CONDITIONS_NOT_SATISFIED


def test_reset_retry_counter_errors(host: Host) -> None:
    window = host.card.store.state.reset_codes["window"]
    host.select_pin("jpki-auth")
    host.verify("jpki-auth", b"0000")
    wrong_code = bytes(len(window))
    assert host.sw(C.reset_retry_counter(wrong_code, b"1111")) == (SW.SECURITY_STATUS_NOT_SATISFIED)
    assert host.sw(C.reset_retry_counter(window[:-1])) == SW.WRONG_LENGTH
    assert host.sw(C.reset_retry_counter(window, b"11")) == SW.WRONG_LENGTH
    assert host.sw(C.reset_retry_counter(window, b"11a1")) == SW.INCORRECT_DATA
    assert host.sw("00 2C 00 80") == SW.WRONG_LENGTH
    assert host.sw("00 2C 02 80 04 31313131") == SW.INCORRECT_P1P2
    # P1 01 carries the code only
    assert host.sw(CommandAPDU(0x00, 0x2C, 0x01, 0x80, window + b"1111")) == SW.WRONG_LENGTH
    assert host.tries() == 2  # none of the refusals touched the counter
    assert host.sw(C.reset_retry_counter(window)) == SW.OK
    assert host.tries() == 3
    assert host.verify("jpki-auth") == SW.OK  # the value was kept
