"""The card oracle: what any APDU, or a power cycle, may do to the emulated card.

Shared by the hypothesis property (``tests/test_card_properties.py``) and the fuzzers
(``tests/fuzz``). For every APDU: the card never raises, answers a status word from its table,
never answers 9000 to a VERIFY whose data is not the PIN, and never breaks a counter rule:

- a counter moves only for the PIN object the command addressed;
- it goes down by exactly one, and only on a VERIFY with data answered 63 Cx (x = new value);
- it goes up only to the maximum, and only on 9000 to VERIFY, CHANGE or RESET RETRY COUNTER;
- the status query answers 63 Cx with x = the counter, and changes nothing;
- 65 81 (memory failure: the store could not write) changes nothing, except that a VERIFY
  whose restore failed keeps its decrement, written before.

A power cycle or warm reset changes no NVM.
"""

from __future__ import annotations

from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.emulator import EmulatedCard


def nvm(card: EmulatedCard) -> dict[str, tuple[int, bytes]]:
    return {k: (p.remaining, p.value) for k, p in card.store.state.pins.items()}


def check_power(card: EmulatedCard, cold: bool) -> None:
    before = nvm(card)
    if cold:
        card.power_off()
        card.power_on()
    else:
        card.reset()
    assert nvm(card) == before, "NVM changed across a power cycle"


def check_apdu(card: EmulatedCard, raw: bytes) -> ResponseAPDU:
    """Send ``raw`` and check the answer and the counters against the rules above."""
    before = nvm(card)
    resp = ResponseAPDU.parse(card.transmit(raw))
    assert SW.is_card_status_word(resp.sw), f"illegal SW {resp.sw:04X} for {raw.hex()}"
    after = {k: card.pin_state(k).remaining for k in before}
    try:
        cmd: CommandAPDU | None = CommandAPDU.parse(raw)
    except ValueError:
        cmd = None
    target = card.last_pin
    changed = {k for k in before if after[k] != before[k][0]}
    assert changed <= ({target} if target else set()), f"{changed} moved on {raw.hex()}"
    if cmd is None:
        assert not changed and resp.sw == SW.WRONG_LENGTH
        return resp
    is_verify = cmd.cla == 0x00 and cmd.ins == 0x20
    if resp.sw == SW.MEMORY_FAILURE:
        assert not changed or (
            is_verify and cmd.data and target and after[target] == before[target][0] - 1
        ), f"65 81 to {raw.hex()} but {changed} moved"
        assert target is None or before[target][1] == card.pin_state(target).value, (
            "65 81 but a PIN value changed"
        )
        return resp
    if is_verify and resp.sw == SW.OK:
        assert target is not None and cmd.data == before[target][1], "9000 without the secret"
        assert before[target][0] > 0, "9000 from a blocked PIN"
    if is_verify and cmd.data and target is not None and SW.retries_left(resp.sw) is not None:
        assert after[target] == before[target][0] - 1 == SW.retries_left(resp.sw), (
            "63Cx to a wrong PIN without spending exactly one try"
        )
    if is_verify and not cmd.data and target is not None:
        assert resp.sw == SW.retries(before[target][0]) and not changed, (
            "the status query changed a counter or misreported it"
        )
    if target is None or target not in changed:
        return resp
    old, new = before[target][0], after[target]
    max_tries = card.pin_state(target).max_tries
    if new < old:
        assert is_verify and cmd.data and new == old - 1 and resp.sw == SW.retries(new)
    else:
        assert resp.sw == SW.OK and new == max_tries
        assert (cmd.cla, cmd.ins) in {(0x00, 0x20), (0x00, 0x24), (0x80, 0x32), (0x00, 0x2C)}
    return resp
