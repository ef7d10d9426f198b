"""A card whose state write fails answers 65 81 (memory failure), logs why, and changes
nothing the write would have changed."""

from __future__ import annotations

import logging

import pytest

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.emulator import PROFILES, CardConfig, CardState, EmulatedCard, MemoryStore
from harness.errors import CardStateError
from tests.oracle import check_apdu
from tests.support import Host


# -- 65 81 when the card cannot write -----------------------------------------------------------
class FailingStore(MemoryStore):
    """A store whose ``fail_at``-th write (1-based) fails like a full disk."""

    def __init__(self, state: CardState, fail_at: int | None) -> None:
        super().__init__(state)
        self.fail_at = fail_at or 1 << 30
        self.writes = 0

    def write_pin(self, pin_id: str, *, remaining: int, value: bytes | None = None) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise CardStateError("card.json.journal: journal write failed: No space left on device")
        super().write_pin(pin_id, remaining=remaining, value=value)


@pytest.mark.parametrize(
    ("case", "fail_at"),
    [
        ("wrong PIN, decrement fails", 1),
        ("right PIN, decrement fails", 1),
        ("right PIN, restore fails", 2),
        ("change fails", None),
        ("reset fails", None),
    ],
)
def test_a_failed_state_write_answers_6581(
    fresh_state: CardState,
    card_config: CardConfig,
    caplog: pytest.LogCaptureFixture,
    case: str,
    fail_at: int | None,
) -> None:
    store = FailingStore(fresh_state, fail_at)
    card = EmulatedCard(store)
    card.power_on()
    host = Host(card, card_config)
    host.select_pin("jpki-auth")
    right = host.secrets["jpki-auth"]
    if case.startswith("change"):
        assert host.verify("jpki-auth", b"0000") == SW.retries(2)  # writes 1 (then 2: restore)
        assert host.verify("jpki-auth") == SW.OK
        store.fail_at = store.writes + 1
        apdu, expect_tries = C.change_reference_data(b"8642"), 3
    elif case.startswith("reset"):
        for _ in range(3):
            host.verify("jpki-auth", b"0000")
        store.fail_at = store.writes + 1
        code = card_config.reset_codes["window"].encode()
        apdu, expect_tries = C.reset_retry_counter(code), 0
    elif case.startswith("wrong"):
        apdu, expect_tries = C.verify(b"0000"), 3
    else:
        apdu, expect_tries = C.verify(right), 3 if fail_at == 1 else 2
    caplog.set_level(logging.ERROR, "harness.emulator.card")
    resp = check_apdu(card, apdu.to_bytes())  # the shared card oracle agrees with 65 81
    assert resp.sw == SW.MEMORY_FAILURE, case
    assert card.pin_state("jpki-auth").remaining == expect_tries
    assert card.pin_state("jpki-auth").value == right  # no new value
    if not case.startswith("change"):
        assert "jpki-auth" not in card.verified
    assert "65 81" in caplog.text and "No space left on device" in caplog.text
    # the card goes on once the store works again
    assert host.verify("jpki-auth") == (SW.OK if expect_tries else SW.REFERENCE_DATA_BLOCKED)


def test_a_failed_write_at_power_on_is_logged_not_raised(
    fresh_state: CardState, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_state.pins["jpki-auth"].remaining = 1
    card = EmulatedCard(
        FailingStore(fresh_state, 1), defects=PROFILES["power-cycle-resets-counter"]
    )
    caplog.set_level(logging.ERROR, "harness.emulator.card")
    assert card.power_on() == card.atr
    assert card.pin_state("jpki-auth").remaining == 1
    assert "at power-on.restore failed, power-on goes on: card.json.journal" in caplog.text
